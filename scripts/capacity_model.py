"""The capacity model's simulation: a KEDA-scaled GPU worker group through a day of jobs.

A discrete-event simulation (SimPy) of one model's worker group as deploy/k8s runs it:
- arrivals: a daily curve averaging RATE jobs/min (trough 0.4x, peak 1.6x the average at
  15:00) and a burst to 10x the average at 14:00 (10 min ramp up, 20 min held, 10 min down),
  Poisson per second;
- the queue is the Redis list (prefetch off: the list is the whole backlog), served first in,
  first out by the ready pods;
- KEDA polls the list every 30 s; the HPA wants ceil(length / listLength) replicas, grows at
  most 100% (or 4 pods) per poll, and shrinks only to the highest wish of the last `cooldown`
  seconds (stabilizationWindowSeconds = cooldownPeriod in deploy/k8s);
- a new pod needs a free GPU: on a running node at once, else a new node (GPU_PER_NODE GPUs)
  starts in 3-5 min; then the pod starts and loads its model in 60-120 s; a node with no pod
  for 10 min is given back (cluster-autoscaler's default);
- GPU service time per job from published figures (MODELS) plus the worker's control-plane
  cost per job measured by `make bench-control`.
Jobs are simulated as one cohort per second (their count, their arrival second), not one
process each: a day at 10k jobs/min is 14.4 M jobs. scripts/capacity.py runs it over the
candidate settings and prints the table.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

DAY_S = 24 * 3600
RATE_WINDOW_S = 120  # a Prometheus rate(...[2m]) of the finished-jobs counter

MODELS = {
    # Published throughput, in seconds of audio one GPU transcribes per second.
    "paraformer-a10": (1 / 0.0076, "Paraformer-large on an A10, one stream: RTF 0.0076"),
    "paraformer-h100": (119.6, "FunASR on an H100: 119.6x realtime"),
    "whisper-3070ti": (12.0, "faster-whisper large-v2 on a 3070 Ti, sequential: ~12x"),
    "whisper-3070ti-b8": (46.0, "faster-whisper large-v2 on a 3070 Ti, batch 8: ~46x"),
}

MEASURED_MS = {"api": 11.7, "redis": 1.98, "worker": 15.5}
"""CPU ms per job from `make bench-control` (before its cuts); bench/control.json wins."""


@dataclass(frozen=True)
class Scenario:
    """What the day looks like and what the cluster can do."""

    rate_per_min: float = 10_000
    burst_x: float = 10.0
    burst_at_s: float = 14 * 3600
    burst_ramp_s: float = 600
    burst_hold_s: float = 1200
    hours: float = 24
    audio_s: float = 20.0           # mean recording length
    model: str = "paraformer-a10"
    worker_ms: float = MEASURED_MS["worker"]
    poll_s: float = 30
    pod_start_s: tuple[float, float] = (60, 120)
    node_start_s: tuple[float, float] = (180, 300)
    node_idle_s: float = 600
    gpu_per_node: int = 8
    spare_nodes: int = 0
    """Empty GPU nodes kept running (cluster-autoscaler overprovisioning: low-priority
    placeholder pods), so a scale-up waits for a model load, not for a node."""
    max_replicas: int = 0
    """maxReplicaCount; 0: 1.5x the pods the peak needs (room to drain a burst's backlog)."""
    min_replicas: int = 0
    seed: int = 1

    @property
    def service_s(self) -> float:
        """GPU seconds per job: its audio at the model's speed, plus the worker's overhead."""
        return self.audio_s / MODELS[self.model][0] + self.worker_ms / 1000

    def rate(self, t: float) -> float:
        """Jobs per second at second t of the day."""
        base = self.rate_per_min / 60
        daily = 1 + 0.6 * math.sin(2 * math.pi * (t - 9 * 3600) / DAY_S)
        into = t - self.burst_at_s
        ramp = self.burst_ramp_s
        if 0 <= into < ramp:
            burst = into / ramp
        elif ramp <= into < ramp + self.burst_hold_s:
            burst = 1.0
        elif 0 <= into - ramp - self.burst_hold_s < ramp:
            burst = 1 - (into - ramp - self.burst_hold_s) / ramp
        else:
            burst = 0.0
        return base * max(daily, burst * self.burst_x * 1.0 + (1 - burst) * daily)

    @property
    def peak_rate(self) -> float:
        return self.rate_per_min / 60 * self.burst_x

    @property
    def replica_cap(self) -> int:
        return self.max_replicas or math.ceil(1.5 * self.peak_rate * self.service_s)

    @property
    def peak_fleet(self) -> int:
        """GPUs a static fleet needs to keep up with the peak (whole nodes)."""
        pods = math.ceil(self.peak_rate * self.service_s)
        return math.ceil(pods / self.gpu_per_node) * self.gpu_per_node


@dataclass
class Result:
    list_length: int
    cooldown_s: int
    rate_target: float = 0.0
    jobs: int = 0
    p50_wait_s: float = 0.0
    p95_wait_s: float = 0.0
    p99_wait_s: float = 0.0
    max_wait_s: float = 0.0
    gpu_hours: float = 0.0
    peak_gpu_hours: float = 0.0
    max_pods: int = 0
    trace: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def share_of_peak(self) -> float:
        return self.gpu_hours / self.peak_gpu_hours


class Cluster:
    """Pods, nodes, the queue and KEDA's loop, as SimPy processes on one clock."""

    def __init__(self, env: simpy.Environment, s: Scenario, list_length: int,
                 cooldown_s: int, rate_target: float = 0.0) -> None:
        self.env, self.s = env, s
        self.list_length, self.cooldown_s = list_length, cooldown_s
        self.rate_target = rate_target
        self.served: deque[float] = deque(maxlen=RATE_WINDOW_S)  # jobs finished, per second
        self.rng = np.random.default_rng(s.seed)
        self.queue: deque[list[float]] = deque()  # [arrival second, jobs left]
        self.queued = 0.0
        self.ready = 0              # pods serving
        self.wanted = 0             # pods the Deployment has (starting or ready)
        self.nodes: list[dict[str, float]] = []  # {"gpus_used", "up", "idle_since"}
        self.wishes: deque[tuple[float, int]] = deque()
        self.waits = np.zeros(DAY_S * 2)
        self.gpu_seconds = 0.0
        self.trace: dict[str, list[float]] = {"t": [], "rate": [], "queue": [], "pods": [],
                                              "gpus": []}

    # --- the queue and the pods serving it, one second at a time ---
    def serve(self) -> Any:
        while True:
            t = self.env.now
            arrived = self.rng.poisson(self.s.rate(t))
            if arrived:
                self.queue.append([t, float(arrived)])
                self.queued += arrived
            capacity = self.ready / self.s.service_s
            served = capacity
            while capacity > 1e-9 and self.queue:
                head = self.queue[0]
                took = min(capacity, head[1])
                self.waits[int(t - head[0])] += took
                head[1] -= took
                capacity -= took
                self.queued -= took
                if head[1] <= 1e-9:
                    self.queue.popleft()
            self.served.append(served - capacity)
            self.gpu_seconds += len(self.nodes) * self.s.gpu_per_node  # paid from launch
            if int(t) % 60 == 0:
                self.trace["t"].append(t / 3600)
                self.trace["rate"].append(self.s.rate(t) * 60)
                self.trace["queue"].append(self.queued)
                self.trace["pods"].append(self.ready)
                self.trace["gpus"].append(len(self.nodes) * self.s.gpu_per_node)
            yield self.env.timeout(1)

    # --- KEDA + the HPA ---
    def keda(self) -> Any:
        while True:
            length = self.queued
            wish = math.ceil(length / self.list_length) if length > 0 else 0
            if self.rate_target:  # KEDA takes the largest wish of its triggers
                rate = sum(self.served) / max(1, len(self.served))
                wish = max(wish, math.ceil(rate / self.rate_target))
            if wish == 0 and self.wanted > 0:
                wish = 1  # N -> 0 only after cooldownPeriod with an empty list (below)
            now = self.env.now
            self.wishes.append((now, wish))
            while self.wishes and self.wishes[0][0] < now - self.cooldown_s:
                self.wishes.popleft()
            target = max(w for _, w in self.wishes)
            if length == 0 and all(w <= 1 for _, w in self.wishes) and \
                    now - self.wishes[0][0] >= self.cooldown_s - self.s.poll_s:
                target = 0  # the list stayed empty for the whole cooldownPeriod
            target = min(self.s.replica_cap, max(self.s.min_replicas, target))
            if target > self.wanted:  # scale-up policy: +100% or +4 pods a period
                target = min(target, max(2 * self.wanted, self.wanted + 4))
                for _ in range(target - self.wanted):
                    self.env.process(self.start_pod())
                self.wanted = target
            elif target < self.wanted:
                self.stop_pods(self.wanted - target)
            yield self.env.timeout(self.s.poll_s)

    def start_pod(self) -> Any:
        node = next((n for n in self.nodes if n["gpus_used"] < self.s.gpu_per_node), None)
        if node is None:
            node = {"gpus_used": 0, "up": -1.0, "idle_since": -1.0}
            self.nodes.append(node)
        node["gpus_used"] += 1
        node["idle_since"] = -1.0
        if node["up"] < 0:
            if node.get("starting") is None:
                node["starting"] = self.env.process(self.start_node(node))
            yield node["starting"]
        yield self.env.timeout(self.rng.uniform(*self.s.pod_start_s))
        if node.get("pods_to_stop", 0) > 0:  # scaled in while it started
            node["pods_to_stop"] -= 1
            self.release(node)
            return
        node.setdefault("ready", 0)
        node["ready"] += 1
        self.ready += 1

    def start_node(self, node: dict[str, Any]) -> Any:
        yield self.env.timeout(self.rng.uniform(*self.s.node_start_s))
        node["up"] = self.env.now

    def stop_pods(self, count: int) -> None:
        """Scale-in: ready pods go first from the emptiest nodes (their GPUs free at once: a
        job in flight finishes within its grace period)."""
        self.wanted -= count
        for node in sorted(self.nodes, key=lambda n: n["gpus_used"]):
            while count and node.get("ready", 0):
                node["ready"] -= 1
                self.ready -= 1
                self.release(node)
                count -= 1
        for node in self.nodes:  # the rest are still starting: stop them once up
            starting = node["gpus_used"] - node.get("ready", 0) - node.get("pods_to_stop", 0)
            take = min(count, starting)
            node["pods_to_stop"] = node.get("pods_to_stop", 0) + take
            count -= take

    def release(self, node: dict[str, Any]) -> None:
        node["gpus_used"] -= 1
        if node["gpus_used"] == 0:
            node["idle_since"] = self.env.now

    def autoscaler(self) -> Any:
        """cluster-autoscaler: a node without pods for node_idle_s goes back, but for
        spare_nodes empty ones kept (and started again when pods take them)."""
        while True:
            now = self.env.now
            empty = [n for n in self.nodes if n["gpus_used"] == 0]
            keep = {id(n) for n in empty[:self.s.spare_nodes]}
            self.nodes = [n for n in self.nodes if id(n) in keep or not (
                n["gpus_used"] == 0 and n["up"] >= 0 and n["idle_since"] >= 0
                and now - n["idle_since"] >= self.s.node_idle_s)]
            for _ in range(self.s.spare_nodes - len(empty)):
                node = {"gpus_used": 0, "up": -1.0, "idle_since": now}
                node["starting"] = self.env.process(self.start_node(node))
                self.nodes.append(node)
            yield self.env.timeout(10)


def simulate(s: Scenario, list_length: int, cooldown_s: int, rate_target: float = 0.0,
             warm: bool = True) -> Result:
    """One day (s.hours) of the group under one listLength and cooldown; with rate_target, a
    second trigger wants (jobs finished per second over 2 min) / rate_target replicas."""
    env = simpy.Environment()
    cluster = Cluster(env, s, list_length, cooldown_s, rate_target)
    if warm:  # the day starts as yesterday ended: the pods the night's load needs, running
        pods = max(s.min_replicas, math.ceil(s.rate(0) * s.service_s * 1.2))
        for _ in range(pods):
            node = next((n for n in cluster.nodes if n["gpus_used"] < s.gpu_per_node), None)
            if node is None:
                node = {"gpus_used": 0, "up": 0.0, "idle_since": -1.0, "ready": 0}
                cluster.nodes.append(node)
            node["gpus_used"] += 1
            node["ready"] += 1
        cluster.ready = cluster.wanted = pods
    for process in (cluster.serve, cluster.keda, cluster.autoscaler):
        env.process(process())
    env.run(until=s.hours * 3600)
    cum = np.cumsum(cluster.waits)
    total = cum[-1]

    def pct(q: float) -> float:
        return float(np.searchsorted(cum, q * total))

    peak_hours = s.peak_fleet * s.hours
    return Result(list_length, cooldown_s, rate_target, jobs=int(total), p50_wait_s=pct(0.5),
                  p95_wait_s=pct(0.95), p99_wait_s=pct(0.99),
                  max_wait_s=float(np.nonzero(cluster.waits)[0].max(initial=0)),
                  gpu_hours=cluster.gpu_seconds / 3600, peak_gpu_hours=peak_hours,
                  max_pods=int(max(cluster.trace["pods"], default=0)), trace=cluster.trace)


def choose(results: list[Result], goal_p95_s: float) -> Result | None:
    """The cheapest candidate (GPU-hours within 2% count as equal; then the lower p99) whose
    p95 queue wait meets the goal."""
    fit = [r for r in results if r.p95_wait_s <= goal_p95_s]
    if not fit:
        return None
    cheapest = min(r.gpu_hours for r in fit)
    return min((r for r in fit if r.gpu_hours <= 1.02 * cheapest),
               key=lambda r: (r.p99_wait_s, r.gpu_hours))


RATE_SHARE = 0.8
"""The rate trigger's target: each pod at 80% of the jobs/s it can serve."""
