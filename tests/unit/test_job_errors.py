"""What a failed job tells its client: a stable type, a user-facing detail, no internals."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from asr_service.errors import AudioInvalid, EngineError
from asr_service.jobs import ErrorType
from asr_service.pipeline import _explain
from asr_service.settings import Settings


def test_engine_internals_stay_in_the_log() -> None:
    kind, detail = _explain(EngineError("FunASR failed: RuntimeError('/srv/models/x.pt')"),
                            Settings(), "job-1")
    assert kind is ErrorType.TRANSCRIPTION_FAILED
    assert "/srv" not in detail and "RuntimeError" not in detail and "job-1" in detail


def test_an_unexpected_exception_is_an_internal_error_without_its_text() -> None:
    kind, detail = _explain(KeyError("secret-field"), Settings(), "job-2")
    assert kind is ErrorType.INTERNAL and "secret-field" not in detail


def test_user_facing_errors_and_time_limits_keep_their_words() -> None:
    assert _explain(AudioInvalid("the audio stream could not be decoded"), Settings(), "j") == \
        (ErrorType.AUDIO_INVALID, "the audio stream could not be decoded")
    assert _explain(SoftTimeLimitExceeded(), Settings(), "j")[0] is ErrorType.TIME_LIMIT
