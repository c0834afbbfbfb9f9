"""Domain errors; the API maps each class to an HTTP status in one table."""

from __future__ import annotations


class AsrError(Exception):
    """Base of every error the service explains to its users."""

    title = "ASR service error"
    slug = "asr-error"
    retry_after_s: int | None = None
    """Seconds a client should wait before trying again (sent as Retry-After), if any."""

    def __init_subclass__(cls, title: str | None = None, slug: str | None = None,
                          retry_after_s: int | None = None, **kwargs: object) -> None:
        """Each error names its title, slug and Retry-After in its class line."""
        super().__init_subclass__(**kwargs)
        if title is not None:
            cls.title = title
        if slug is not None:
            cls.slug = slug
        if retry_after_s is not None:
            cls.retry_after_s = retry_after_s

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AudioInvalid(AsrError, title="Audio could not be decoded", slug="audio-invalid"):
    """The upload is not audio we can decode."""


class AudioTooLong(AsrError, title="Audio is too long", slug="audio-too-long"):
    """The recording is longer than MAX_AUDIO_SECONDS."""


class JobNotFound(AsrError, title="Task not found", slug="task-not-found"):
    """No job has this id (never existed, deleted or expired)."""


class ModelNotFound(AsrError, title="Model not found", slug="model-not-found"):
    """A request names a model no worker serves."""


class JobConflict(AsrError, title="Task is in the wrong state", slug="task-conflict"):
    """The job is in a state that does not allow the operation."""


class IdempotencyMismatch(AsrError, title="Idempotency-Key reused with a different request",
                          slug="idempotency-key-mismatch"):
    """An Idempotency-Key was reused with a different request."""


class RecordingGone(AsrError, title="Recording removed", slug="recording-gone"):
    """The job exists but its recording was removed by retention."""


class StorageFull(AsrError,
                  title="Audio storage full", slug="audio-storage-full", retry_after_s=30):
    """The recordings of queued and running jobs fill the stored-audio budget."""


class QueueFull(AsrError, title="Queue full", slug="queue-full", retry_after_s=30):
    """MAX_QUEUED_JOBS jobs are queued or running: the server takes no more for now."""


class OwnerQueueFull(AsrError,
                     title="Too many queued tasks", slug="too-many-queued-tasks", retry_after_s=30):
    """One client has MAX_QUEUED_JOBS_PER_KEY jobs queued or running."""


class QueueUnavailable(AsrError, title="Queue unavailable", slug="queue-unavailable"):
    """Redis (broker, result backend and job store) cannot be reached."""


class OutcomeUnknown(AsrError, title="Outcome unknown", slug="outcome-unknown", retry_after_s=5):
    """Redis failed after a state change was sent: it may or may not have happened. The
    problem names the task, so the client can look instead of guessing."""

    def __init__(self, detail: str, task_id: str) -> None:
        super().__init__(detail)
        self.task_id = task_id


class ProbeBusy(AsrError, title="Too busy to read the upload", slug="probe-busy", retry_after_s=5):
    """The audio probe did not answer in time (the API process is overloaded)."""


class UploadsBusy(AsrError,
                  title="Too many uploads in flight", slug="uploads-busy", retry_after_s=5):
    """This API process already holds MAX_INFLIGHT_UPLOAD_MB of request bodies."""


class EngineError(AsrError, title="Transcription failed", slug="transcription-failed"):
    """The engine failed on a job (the job is marked failed, the worker lives on)."""


class EngineTimeLimit(EngineError):
    """A batch's engine call passed the hard time limit; the engine process was replaced."""


class ModelLoadError(AsrError, title="Model could not be loaded", slug="model-load-failed"):
    """The model could not be loaded; the worker refuses to start."""


class UrlRefused(AsrError, title="URL refused", slug="url-refused"):
    """A callback_url or audio_url is not http(s) or reaches a non-public address."""


class FetchFailed(AsrError, title="Could not fetch audio_url", slug="audio-url-failed"):
    """The recording at audio_url could not be downloaded (network, status, size, time)."""
