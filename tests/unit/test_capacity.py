"""The capacity model (scripts/capacity_model.py, make capacity) at a lower rate: what it
shows holds."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from scripts.capacity import control_plane
from scripts.capacity_model import RATE_SHARE, Scenario, choose, simulate

SHORT = Scenario(rate_per_min=3000, seed=3)  # a day, at 3,000 jobs/min: ~1 s a run


def test_the_daily_curve_averages_the_rate_it_is_given():
    day = replace(SHORT, hours=24, burst_x=0)
    mean = sum(day.rate(t) for t in range(0, 86400, 60)) / 1440
    assert mean == pytest.approx(3000 / 60, rel=0.01)
    assert max(SHORT.rate(t) for t in range(0, 86400, 60)) == pytest.approx(500)


def test_a_fleet_sized_for_the_peak_keeps_waits_at_zero_for_all_its_gpu_hours():
    pods = math.ceil(SHORT.peak_rate * SHORT.service_s)
    static = simulate(replace(SHORT, min_replicas=pods, spare_nodes=0), 10**9, 10**9)
    assert static.p95_wait_s < 5  # busy at 100% in the burst: a few seconds
    assert static.share_of_peak >= 0.95


def test_the_queue_trigger_alone_overshoots_on_fast_jobs_and_a_rate_trigger_steadies_it():
    alone = simulate(SHORT, 32, 300)
    with_rate = simulate(SHORT, 32, 300, rate_target=RATE_SHARE / SHORT.service_s)
    assert with_rate.gpu_hours < 0.5 * alone.gpu_hours
    assert with_rate.p95_wait_s < alone.p95_wait_s
    assert choose([alone, with_rate], goal_p95_s=60) is with_rate


def test_a_longer_cooldown_holds_more_gpu_hours():
    rate = RATE_SHARE / SHORT.service_s
    short, long = (simulate(SHORT, 32, c, rate_target=rate) for c in (300, 3600))
    assert long.gpu_hours > short.gpu_hours


def test_it_says_where_one_redis_saturates_and_how_to_split():
    lines = control_plane(Scenario(), {"api": 11.7, "redis": 1.98, "worker": 15.5})
    assert "saturates at ~505 jobs/s" in lines[0]
    assert "one Redis per model group" in lines[2]
    assert "One Redis carries" in control_plane(
        Scenario(), {"api": 3, "redis": 0.3, "worker": 5})[2]
