"""What a failed job tells its client: a stable type, a user-facing detail, no internals."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded

from asr_service.errors import AudioInvalid, EngineError
from asr_service.jobs import ErrorType
from asr_service.lifecycle import Runner
from asr_service.pipeline import FULL_RETRY_S, Delivery, JobBusy, _explain, run_job
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


def test_a_claim_refused_by_a_full_redis_leaves_the_job_queued_for_a_later_delivery() -> None:
    class FullRedis:
        """A lifecycle whose Redis is at maxmemory: the claim's first write is refused."""

        def claim(self, *_: object, **__: object) -> None:
            raise redis.exceptions.OutOfMemoryError(
                "command not allowed when used memory > 'maxmemory'.")

    with pytest.raises(JobBusy) as busy:
        run_job(FullRedis(), None, None, Settings(),  # type: ignore[arg-type]
                Delivery("job", "delivery", "worker", Runner("token", 1)))

    assert busy.value.retry_in_s == FULL_RETRY_S  # retried, not failed: nothing was written
