"""The nemesis: a fault schedule drawn from a seed, and the hands that strike and heal.

`schedule(seed, seconds)` is a pure function: the same seed gives the same faults at the same
offsets on the same targets for the same time (kinds are dealt from shuffled decks, so every
kind comes up once per deck). `Nemesis` plays it against a running stack: each fault in a
thread of its own, so faults overlap, but one at a time per target (a host, Redis, an API
process, the webhook receiver), as one hand on one machine.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.chaos.stack import Stack

# kind: (targets, shortest, longest fault in seconds)
KINDS: dict[str, tuple[tuple[str, ...], float, float]] = {
    # A host's workers: its job worker and its live-session worker.
    "worker-kill": (("b", "c"), 0.5, 3.0),     # SIGKILL them, main processes and children
    "engine-kill": (("b", "c"), 0.0, 0.0),     # SIGKILL their processes running the model
    "worker-term": (("b", "c"), 0.5, 2.0),     # SIGTERM them (a deploy), started again
    "host-crash": (("b", "c"), 2.0, 6.0),      # cable out and power off; later back on
    "link-cut": (("b", "c"), 1.0, 6.0),        # cable out, processes go on; later back in
    "redis-pause": (("redis",), 0.5, 4.0),     # SIGSTOP, later SIGCONT
    "redis-restart": (("redis",), 0.2, 2.0),   # SIGKILL, started again from its AOF
    "redis-full": (("redis",), 2.0, 6.0),      # maxmemory at what it holds now
    "api-restart": (("api-0", "api-1"), 0.5, 3.0),  # SIGKILL an API process, started again
    "webhook-slow": (("receiver",), 3.0, 8.0),  # every webhook answer waits 5 s
}
PROCESS_KILLS = ("worker-kill", "engine-kill", "host-crash", "worker-term")
SLOW_RECEIVER_S = 5.0


@dataclass
class Fault:
    """One planned fault and, once played, when it struck and when it was healed."""

    at: float
    kind: str
    target: str
    duration: float
    started: float = 0.0
    healed: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule(seed: int, seconds: float, mean_gap_s: float = 6.0,
             quiet_end_s: float = 8.0) -> list[Fault]:
    """The faults of a soak of `seconds`: at least one of each kind when time allows."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    deck: list[str] = []
    at = rng.uniform(2.0, 2.0 + mean_gap_s)
    while at < seconds - quiet_end_s:
        if not deck:
            deck = rng.sample(sorted(KINDS), len(KINDS))
        kind = deck.pop()
        targets, shortest, longest = KINDS[kind]
        faults.append(Fault(round(at, 3), kind, rng.choice(targets),
                            round(rng.uniform(shortest, longest), 3)))
        at += rng.expovariate(1 / mean_gap_s)
    return faults


@dataclass
class Nemesis:
    """Plays a schedule against the stack from `began` (time.time())."""

    stack: Stack
    faults: list[Fault]
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def play(self, began: float) -> None:
        for fault in self.faults:
            time.sleep(max(0.0, began + fault.at - time.time()))
            thread = threading.Thread(target=self._strike, args=(fault,), daemon=True,
                                      name=f"fault-{fault.kind}")
            thread.start()
            self.threads.append(thread)

    def join(self, timeout: float) -> None:
        deadline = time.time() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.time()))

    def _strike(self, fault: Fault) -> None:
        with self.locks.setdefault(fault.target, threading.Lock()):
            fault.started = time.time()
            try:
                getattr(self, fault.kind.replace("-", "_"))(fault)
            except Exception as exc:  # the soak goes on; the checker reports it
                fault.note = f"{fault.note} error: {type(exc).__name__}: {exc}".strip()
                self.errors.append(f"{fault.kind} on {fault.target}: {exc!r}")
            fault.healed = time.time()

    # -- the faults ---------------------------------------------------------------------------

    def worker_kill(self, fault: Fault) -> None:
        workers = self.stack.workers_on(fault.target)
        fault.note = f"killed {sum(w.kill_tree() for w in workers)} processes"
        time.sleep(fault.duration)
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()

    def engine_kill(self, fault: Fault) -> None:
        killed = []
        for worker in self.stack.workers_on(fault.target):
            for child in worker.children()[-1:]:  # the newest: the pool process with the model
                child.kill()
                killed.append(str(child.pid))
        fault.note = f"killed pids {', '.join(killed)}"

    def worker_term(self, fault: Fault) -> None:
        workers = self.stack.workers_on(fault.target)
        for worker in workers:
            worker.signal(signal.SIGTERM)
        began = time.time()
        for worker in workers:  # a warm shutdown: running jobs end or are handed back, live
            worker.reap(timeout=60)  # sessions move to the other host's live worker
        fault.note = f"workers exited in {time.time() - began:.1f} s"
        time.sleep(fault.duration)
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()

    def host_crash(self, fault: Fault) -> None:
        fault.note = f"killed {self.stack.host_down(fault.target)} processes"
        time.sleep(fault.duration)
        self.stack.host_up(fault.target)

    def link_cut(self, fault: Fault) -> None:
        self.stack.unplug(fault.target)
        time.sleep(fault.duration)
        self.stack.plug(fault.target)

    def redis_pause(self, fault: Fault) -> None:
        redis_proc = self.stack.procs["redis"]
        redis_proc.signal(signal.SIGSTOP)
        time.sleep(fault.duration)
        redis_proc.signal(signal.SIGCONT)

    def redis_restart(self, fault: Fault) -> None:
        redis_proc = self.stack.procs["redis"]
        redis_proc.kill_tree()
        time.sleep(fault.duration)
        redis_proc.start()

    def redis_full(self, fault: Fault) -> None:
        client = self.stack.redis()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used)
        fault.note = f"maxmemory {used}"
        time.sleep(fault.duration)
        self._until_done(lambda: self.stack.redis().config_set("maxmemory", 0))

    def api_restart(self, fault: Fault) -> None:
        api = self.stack.procs[fault.target]
        api.kill_tree()
        time.sleep(fault.duration)
        api.start()

    def webhook_slow(self, fault: Fault) -> None:
        self.stack.receiver.delay_s = SLOW_RECEIVER_S
        time.sleep(fault.duration)
        self.stack.receiver.delay_s = 0.0

    @staticmethod
    def _until_done(action: Any, timeout: float = 60) -> None:
        """An action on Redis, tried until it is done: Redis may be paused or restarting."""
        import redis

        deadline = time.time() + timeout
        while True:
            try:
                action()
                return
            except redis.RedisError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
