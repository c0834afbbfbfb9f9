"""`make capacity`: the capacity model (scripts/capacity_model.py) over listLength x cooldown, with
and without the throughput trigger. Prints the p95 queue wait and the GPU-hours against a fleet
sized for the peak per candidate and chooses the cheapest whose p95 meets the goal; then the
Redis and API budget at that rate from the measured CPU per job (bench/control.json of `make
bench-control`, else the figures measured before). Writes bench/capacity.png (with matplotlib)
and bench/capacity.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.capacity_model import (  # noqa: E402
    MEASURED_MS,
    MODELS,
    RATE_SHARE,
    Result,
    Scenario,
    choose,
    simulate,
)

OUT = ROOT / "bench"


def measured() -> dict[str, float]:
    """CPU ms per job: bench/control.json from `make bench-control` if present."""
    path = OUT / "control.json"
    if path.exists():
        return json.loads(path.read_text())["cpu_ms_per_job"]
    return MEASURED_MS


def control_plane(s: Scenario, ms: dict[str, float]) -> list[str]:
    """What the rate asks of Redis and the API, and where one Redis saturates."""
    avg, peak = s.rate_per_min / 60, s.peak_rate
    redis_max = 1000 / ms["redis"]
    lines = [
        f"Redis: {ms['redis']:.2f} ms CPU per job -> one Redis (one core) saturates at "
        f"~{redis_max:,.0f} jobs/s ({redis_max * 60:,.0f}/min); keep it under 70%: "
        f"{0.7 * redis_max:,.0f} jobs/s. This day: average {avg:,.0f} jobs/s "
        f"({avg / redis_max:.0%} of a core), burst {peak:,.0f} jobs/s "
        f"({peak / redis_max:.0%}).",
        f"API: {ms['api']:.2f} ms CPU per job -> {avg * ms['api'] / 1000:.1f} cores on average, "
        f"{peak * ms['api'] / 1000:.1f} in the burst (the HPA on CPU adds pods).",
    ]
    groups = math.ceil(peak / (0.7 * redis_max))
    if groups > 1:
        lines.append(
            f"Beyond ~{0.7 * redis_max:,.0f} jobs/s split the control plane: one Redis per "
            "model group (each its own REDIS_URL, API Deployment and ScaledObjects; clients "
            f"or the Ingress route by model); this burst needs {groups} such Redis, so a "
            "single model's burst needs its queue sharded the same way (N groups serving one "
            "model, the Ingress spreading clients) or a cheaper job: at the 0.3 ms goal one "
            f"Redis takes {0.7 * 1000 / 0.3:,.0f} jobs/s. Redis Cluster does not help: a "
            "job's Lua scripts and Celery's queue each live on one key slot.")
    else:
        lines.append("One Redis carries this day, burst included, below 70% of its core.")
    return lines


def plot(s: Scenario, results: list[Result], chosen: Result | None, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (the table above has the figures)"
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    shown = chosen or results[0]
    tr = shown.trace
    ax1.plot(tr["t"], tr["rate"], label="arrivals (jobs/min)")
    ax1.plot(tr["t"], tr["queue"], label="queue length (jobs)")
    ax1.set_yscale("symlog")
    ax1.legend()
    ax1.set_title(f"{s.rate_per_min:,.0f} jobs/min average, {s.burst_x:.0f}x burst, "
                  f"listLength {shown.list_length}, cooldown {shown.cooldown_s} s")
    ax2.plot(tr["t"], tr["pods"], label="ready pods")
    ax2.plot(tr["t"], tr["gpus"], label="GPUs on nodes (paid)")
    ax2.axhline(s.peak_fleet, color="grey", linestyle="--", label="fleet sized for the peak")
    ax2.set_xlabel("hour of the day")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"wrote {path.relative_to(ROOT)}"


def candidates(list_lengths: list[int], cooldowns: list[int]) -> list[tuple[int, int, bool]]:
    """(listLength, cooldown, with the rate trigger): the list trigger alone, then with it."""
    return [(n, c, rate) for rate in (False, True) for n in list_lengths for c in cooldowns]


def run(s: Scenario, grid: list[tuple[int, int, bool]],
        goal_p95_s: float) -> tuple[list[Result], Result | None]:
    results = [simulate(s, n, c, RATE_SHARE / s.service_s if rate else 0.0)
               for n, c, rate in grid]
    return results, choose(results, goal_p95_s)


def secs(value: float) -> str:
    """Waits are counted in whole seconds: 0 is under one."""
    return "<1" if value < 1 else f"{value:.0f}"


def print_report(s: Scenario, results: list[Result], chosen: Result | None,
                 goal_p95_s: float, goal_share: float) -> None:
    speed, source = MODELS[s.model]
    print(f"capacity model: {s.hours:g} h, {s.rate_per_min:,.0f} jobs/min average, "
          f"{s.burst_x:g}x burst at {s.burst_at_s / 3600:g}:00, {s.audio_s:g} s of audio a job")
    print(f"GPU: {source} -> {s.service_s * 1000:.0f} ms a job (incl. {s.worker_ms:g} ms "
          f"worker overhead); KEDA poll {s.poll_s:g} s, pod start + model load "
          f"{s.pod_start_s[0]:g}-{s.pod_start_s[1]:g} s, node start {s.node_start_s[0]:g}-"
          f"{s.node_start_s[1]:g} s, {s.gpu_per_node} GPUs a node")
    print(f"fleet sized for the peak: {s.peak_fleet} GPUs = {s.peak_fleet * s.hours:,.0f} "
          "GPU-hours")
    print(f"{'trigger':>14} {'listLength':>10} {'cooldown':>9} {'p50 s':>7} {'p95 s':>7} "
          f"{'p99 s':>7} {'max s':>7} {'max pods':>8} {'GPU-h':>8} {'of peak':>8}")
    for r in results:
        mark = "  <- chosen" if r is chosen else ""
        trigger = f"list+rate {r.rate_target:.1f}" if r.rate_target else "list"
        print(f"{trigger:>14} {r.list_length:>10} {r.cooldown_s:>9} {secs(r.p50_wait_s):>7} "
              f"{secs(r.p95_wait_s):>7} {secs(r.p99_wait_s):>7} {secs(r.max_wait_s):>7} "
              f"{r.max_pods:>8} {r.gpu_hours:>8,.0f} {r.share_of_peak:>8.0%}{mark}")
    if chosen is None:
        print(f"no candidate keeps p95 <= {goal_p95_s:g} s: GOAL MISSED")
        return
    ok = chosen.share_of_peak <= goal_share
    rate = (f" + a rate trigger at {chosen.rate_target:.1f} jobs/s a pod" if chosen.rate_target
            else "")
    print(f"chosen: listLength {chosen.list_length}{rate}, cooldown {chosen.cooldown_s} s: p95 "
          f"{secs(chosen.p95_wait_s)} s (goal <= {goal_p95_s:g}) on {chosen.share_of_peak:.0%} "
          f"of the peak fleet's GPU-hours (goal <= {goal_share:.0%})"
          + ("" if ok else "  GOAL MISSED"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=10_000, help="average jobs per minute")
    p.add_argument("--burst", type=float, default=10.0)
    p.add_argument("--hours", type=float, default=24)
    p.add_argument("--audio-s", type=float, default=20.0)
    p.add_argument("--model", choices=sorted(MODELS), default="paraformer-a10")
    p.add_argument("--list-lengths", default="32,128,256")
    p.add_argument("--cooldowns", default="300,3600")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--goal-p95-s", type=float, default=60)
    p.add_argument("--goal-share", type=float, default=0.6)
    args = p.parse_args(argv)
    ms = measured()
    s = Scenario(rate_per_min=args.rate, burst_x=args.burst, hours=args.hours,
                 audio_s=args.audio_s, model=args.model, worker_ms=ms["worker"],
                 seed=args.seed)
    grid = candidates([int(x) for x in args.list_lengths.split(",")],
                      [int(x) for x in args.cooldowns.split(",")])
    results, chosen = run(s, grid, args.goal_p95_s)
    print_report(s, results, chosen, args.goal_p95_s, args.goal_share)
    for line in control_plane(s, ms):
        print(line)
    print(plot(s, results, chosen, OUT / "capacity.png"))
    OUT.mkdir(exist_ok=True)
    (OUT / "capacity.json").write_text(json.dumps({
        "scenario": {k: v for k, v in asdict(s).items()},
        "results": [{k: v for k, v in asdict(r).items() if k != "trace"} | {
            "share_of_peak": round(r.share_of_peak, 3)} for r in results],
        "chosen": None if chosen is None else {
            "list_length": chosen.list_length, "cooldown_s": chosen.cooldown_s,
            "rate_target": round(chosen.rate_target, 2)},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
