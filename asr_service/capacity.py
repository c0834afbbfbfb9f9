"""What active (queued or running) jobs may hold of Redis at once, and why a submit or retry
that would exceed it is refused. The scripts enforce it (lua/common.lua refusal()) in the same
atomic step that creates or re-queues the job, so every API process agrees."""

from __future__ import annotations

from dataclasses import dataclass

from asr_service.errors import AsrError, OwnerQueueFull, QueueFull, StorageFull
from asr_service.settings import JOB_OVERHEAD_BYTES


@dataclass(frozen=True)
class Caps:
    """What active (queued or running) jobs may hold at once; 0: no cap. Each costs its
    recording's bytes + JOB_OVERHEAD_BYTES of the stored-audio budget."""

    max_stored_bytes: int = 0
    max_active: int = 0
    max_active_per_owner: int = 0

    def lua(self) -> dict[str, int]:
        """The limits as the scripts read them (common.lua refusal())."""
        return {"job_overhead": JOB_OVERHEAD_BYTES, "max_active": self.max_active,
                "max_active_per_owner": self.max_active_per_owner}

    def error(self, outcome: str) -> AsrError:
        """Why a submit or retry was refused ('full', 'queue-full' or 'owner-full')."""
        if outcome == "queue-full":
            return QueueFull(f"{self.max_active} tasks are queued or running, the most this "
                             "server takes at once (MAX_QUEUED_JOBS); nothing was stored, try "
                             "again once some finish")
        if outcome == "owner-full":
            return OwnerQueueFull(f"you have {self.max_active_per_owner} tasks queued or "
                                  "running, the most one client may have at once "
                                  "(MAX_QUEUED_JOBS_PER_KEY); nothing was stored, try again "
                                  "once some finish")
        return StorageFull(
            "the recordings of queued and running jobs fill the audio storage budget "
            f"(MAX_STORED_AUDIO_MB={self.max_stored_bytes // 2**20}); nothing was stored, "
            "try again once jobs finish")
