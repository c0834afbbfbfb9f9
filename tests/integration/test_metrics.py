"""/metrics in Prometheus text format, and the same figures as /api/v1/stats and the dashboard."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from asr_service.resources import gpu_memory_bytes
from tests import samples
from tests.integration.flow import submit, wait_for


def scrape(client) -> dict[str, dict[tuple, float]]:
    """Every sample of /metrics as {sample name: {sorted labels: value}}, via the real parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def test_metrics_count_a_finished_job(client, worker):
    before = scrape(client)
    task_id = submit(client, samples.encode("wav", 2.0)).get_json()["task_id"]
    assert wait_for(client, task_id)["status"] == "succeeded"
    after = scrape(client)

    assert after["asr_redis_up"][()] == 1
    succeeded = (("status", "succeeded"),)
    assert after["asr_jobs"][succeeded] == before["asr_jobs"][succeeded] + 1
    assert after["asr_workers_online"][()] >= 1
    assert after["asr_engines_ready"][()] >= 1
    assert after["asr_queue_depth"][()] >= 0
    assert after["asr_submit_latency_seconds_count"][()] == \
        before["asr_submit_latency_seconds_count"][()] + 1
    inf = (("le", "+Inf"),)
    assert after["asr_submit_latency_seconds_bucket"][inf] == \
        after["asr_submit_latency_seconds_count"][()]
    # The sum is the process's since it started (every earlier test's submits): this one's part.
    this_submit_s = (after["asr_submit_latency_seconds_sum"][()]
                     - before["asr_submit_latency_seconds_sum"][()])
    assert 0 < this_submit_s < 60
    # Cumulative histograms, kept by the lifecycle as each job succeeds (never decrease).
    assert after["asr_job_end_to_end_seconds_count"][()] == \
        before["asr_job_end_to_end_seconds_count"][()] + 1
    # (a succeeded job of zero seconds has no RTF)
    assert after["asr_job_rtf_count"][()] == before["asr_job_rtf_count"][()] + 1
    memory = after["asr_worker_memory_bytes"]
    assert any(dict(labels)["worker"].startswith(worker.name) and value > 50 * 2**20
               for labels, value in memory.items()), memory


def test_every_api_process_reports_the_same_cluster_figures(make_client, worker):
    # Two apps stand for two gunicorn worker processes: a submission served by one is counted
    # in what the other one answers, since both read Redis.
    first, second = make_client(), make_client()
    task_id = submit(first, samples.encode("wav", 1.0)).get_json()["task_id"]
    wait_for(first, task_id)
    a, b = scrape(first), scrape(second)
    for name in ("asr_jobs", "asr_submit_latency_seconds_count", "asr_submit_latency_seconds_sum",
                 "asr_job_end_to_end_seconds_bucket", "asr_workers_online"):
        assert a[name] == b[name], name


def test_stats_dashboard_and_metrics_agree(client, worker):
    wait_for(client, submit(client, samples.encode("wav", 1.0)).get_json()["task_id"])
    stats = client.get("/api/v1/stats").get_json()
    dashboard = client.get("/api/v1/dashboard").get_json()
    metrics = scrape(client)

    assert dashboard["stats"]["by_status"] == stats["by_status"]
    assert {dict(k)["status"]: v for k, v in metrics["asr_jobs"].items()} == stats["by_status"]
    assert dashboard["stats"]["jobs_total"] == stats["jobs_total"] == sum(
        metrics["asr_jobs"].values())
    assert dashboard["stats"]["audio_seconds_total"] == stats["audio_seconds_total"]
    assert round(metrics["asr_audio_seconds"][()], 3) == stats["audio_seconds_total"]
    assert dashboard["workers_online"] == metrics["asr_workers_online"][()]
    assert dashboard["queue_depth"] == metrics["asr_queue_depth"][()]


def test_metrics_say_redis_is_down_instead_of_failing(make_client):
    down = make_client(redis_url="redis://127.0.0.1:1/0")
    metrics = scrape(down)
    assert metrics == {"asr_redis_up": {(): 0.0}}


def test_worker_gpu_memory_is_read_per_process_from_the_driver(tmp_path, monkeypatch):
    # No GPU here: a stand-in nvidia-smi prints what the real one prints for
    # --query-compute-apps=pid,used_memory --format=csv,noheader,nounits (MiB).
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '4242, 1536'\necho '999, 2048'\necho '4243, [N/A]'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert gpu_memory_bytes({4242, 4243}) == 1536 * 2**20
    assert gpu_memory_bytes({1}) is None

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu_memory_bytes({4242}) is None
