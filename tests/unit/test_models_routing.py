"""Which queue a model's jobs go to when worker groups overlap (JobService.models)."""
from dataclasses import dataclass

from asr_service.cluster import WorkerInfo
from asr_service.service import JobService
from asr_service.settings import Settings


@dataclass
class _Cluster:
    live: list[WorkerInfo]

    def workers(self) -> list[WorkerInfo]:
        return self.live


def _worker(name: str, model: str, queue: str, ready: int = 1) -> WorkerInfo:
    return WorkerInfo(hostname=name, pid=1, concurrency=1, active=0, model=model, device="cpu",
                      last_seen=0.0, engines_ready=ready, queue=queue)


def _models(*workers: WorkerInfo) -> dict[str, tuple[str, int]]:
    settings = Settings(asr_model="models/tiny-paraformer", queue_name="asr")
    service = JobService(settings, None, None, None, None, _Cluster(list(workers)))  # type: ignore[arg-type]
    return service.models()


def test_default_model_waits_on_its_queue_without_workers():
    assert _models() == {"tiny-paraformer": ("asr", 0)}


def test_default_model_counts_only_its_own_queue():
    assert _models(_worker("a", "tiny-paraformer", "asr"),
                   _worker("b", "tiny-paraformer", "elsewhere"),
                   _worker("c", "tiny-paraformer", "elsewhere"))["tiny-paraformer"] == ("asr", 1)


def test_other_model_goes_to_its_biggest_group_then_by_name():
    served = _models(_worker("a", "whisper", "w-small"), _worker("b", "whisper", "w-big"),
                     _worker("c", "whisper", "w-big"), _worker("d", "large", "l-2"),
                     _worker("e", "large", "l-1"))
    assert served["whisper"] == ("w-big", 2)
    assert served["large"] == ("l-1", 1)


def test_workers_still_loading_serve_nothing():
    assert "whisper" not in _models(_worker("a", "whisper", "w", ready=0))
