"""Domain errors; the API maps each class to an HTTP status in one table."""

from __future__ import annotations


class AsrError(Exception):
    """Base of every error the service explains to its users."""

    title = "ASR service error"
    slug = "asr-error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AudioInvalid(AsrError):
    """The upload is not audio we can decode."""

    title = "Audio could not be decoded"
    slug = "audio-invalid"


class AudioTooLong(AsrError):
    """The recording is longer than MAX_AUDIO_SECONDS."""

    title = "Audio is too long"
    slug = "audio-too-long"


class JobNotFound(AsrError):
    """No job has this id (never existed, deleted or expired)."""

    title = "Task not found"
    slug = "task-not-found"


class ModelNotFound(AsrError):
    """A request names a model no worker serves."""

    title = "Model not found"
    slug = "model-not-found"


class JobConflict(AsrError):
    """The job is in a state that does not allow the operation."""

    title = "Task is in the wrong state"
    slug = "task-conflict"


class IdempotencyMismatch(AsrError):
    """An Idempotency-Key was reused with a different request."""

    title = "Idempotency-Key reused with a different request"
    slug = "idempotency-key-mismatch"


class RecordingGone(AsrError):
    """The job exists but its recording was removed by retention."""

    title = "Recording removed"
    slug = "recording-gone"


class StorageFull(AsrError):
    """The recordings of queued and running jobs fill the stored-audio budget."""

    title = "Audio storage full"
    slug = "audio-storage-full"
    retry_after_s = 30


class QueueFull(AsrError):
    """MAX_QUEUED_JOBS jobs are queued or running: the server takes no more for now."""

    title = "Queue full"
    slug = "queue-full"
    retry_after_s = 30


class OwnerQueueFull(AsrError):
    """One client has MAX_QUEUED_JOBS_PER_KEY jobs queued or running."""

    title = "Too many queued tasks"
    slug = "too-many-queued-tasks"
    retry_after_s = 30


class QueueUnavailable(AsrError):
    """Redis (broker, result backend and job store) cannot be reached."""

    title = "Queue unavailable"
    slug = "queue-unavailable"


class OutcomeUnknown(AsrError):
    """Redis failed after a state change was sent: it may or may not have happened. The
    problem names the task, so the client can look instead of guessing."""

    title = "Outcome unknown"
    slug = "outcome-unknown"
    retry_after_s = 5

    def __init__(self, detail: str, task_id: str) -> None:
        super().__init__(detail)
        self.task_id = task_id


class ProbeBusy(AsrError):
    """The audio probe did not answer in time (the API process is overloaded)."""

    title = "Too busy to read the upload"
    slug = "probe-busy"
    retry_after_s = 5


class UploadsBusy(AsrError):
    """This API process already holds MAX_INFLIGHT_UPLOAD_MB of request bodies."""

    title = "Too many uploads in flight"
    slug = "uploads-busy"
    retry_after_s = 5


class EngineError(AsrError):
    """The engine failed on a job (the job is marked failed, the worker lives on)."""

    title = "Transcription failed"
    slug = "transcription-failed"


class EngineTimeLimit(EngineError):
    """A batch's engine call passed the hard time limit; the engine process was replaced."""


class ModelLoadError(AsrError):
    """The model could not be loaded; the worker refuses to start."""

    title = "Model could not be loaded"
    slug = "model-load-failed"


class UrlRefused(AsrError):
    """A callback_url or audio_url is not http(s) or reaches a non-public address."""

    title = "URL refused"
    slug = "url-refused"


class FetchFailed(AsrError):
    """The recording at audio_url could not be downloaded (network, status, size, time)."""

    title = "Could not fetch audio_url"
    slug = "audio-url-failed"
