"""Workers on separate hosts lose nothing when one host dies (issue 12).

Three hosts are Linux network namespaces on a private LAN (tests/netns.py): host A runs Redis
(its LAN address only, with a password) and the API under gunicorn (its LAN address, API keys
required); hosts B and C each run a Celery worker. The hosts share no filesystem: each runs
from its own copy of the code and models, with its own logs, HOME and an empty private /tmp,
and they reach each other only over the LAN. Jobs flow through both workers; while B runs one,
B's cable is pulled and every process on it SIGKILLed, as a crashed machine would go. Every job
must still succeed exactly once, the one B was running finished by C.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pytest
import redis
import requests

from asr_service.cluster import Cluster
from asr_service.jobs import Keys
from asr_service.settings import Settings
from tests import netns, samples
from tests.harness import eventually, logged, read_jsonl, start_process, wait_ready
from tests.integration.conftest import LONG_S, ROOT, report, settings_env

pytestmark = pytest.mark.slow  # three network-namespace hosts

JOBS = 12
LEASE_S = 2  # how long a dead worker's job stays claimed (the default, 15 s, is for production)
REDIS_PORT, API_PORT = 6379, 8000
STRIKE_INTO_JOB_S = 0.3  # a LONG_S job runs 1-2 s: B dies in the middle of it
WORKER_START_S = 60
TEST_BUDGET_S = 115  # every job must have ended this long after set-up began
HOSTS = ("a", "b", "c")
WORKER_HOSTS = ("b", "c")



@dataclass
class Site:
    """A host's own copy of the installed service, its settings, and what runs on it."""

    lan: netns.Lan
    host: netns.Host
    root: Path
    settings: Settings
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node: str = ""
    """Its Celery worker's name (name@hostname), as job records show it."""

    @property
    def logs(self) -> Path:
        return Path(self.settings.log_dir)

    def argv(self, argv: list[str | Path]) -> list[str]:
        """`argv` as run on this host."""
        return self.lan.argv(self.host.name, [str(a) for a in argv])

    def env(self) -> dict[str, str]:
        env = settings_env(self.settings)
        env["HOME"] = str(self.root / "home")
        for shared in ("PYTHONPATH", "TMPDIR"):
            env.pop(shared, None)
        return env

    def start(self, argv: list[str | Path], log: str, ready: Callable[[], object],
              timeout: float, ignoring: type[Exception] | tuple[type[Exception], ...] = (),
              ) -> None:
        """Run `argv` on this host, returning once `ready()` (see harness.start_process)."""
        self.procs.append(start_process(self.argv(argv), ready=ready, timeout=timeout,
                                        ignoring=ignoring, env=self.env(), cwd=self.root,
                                        log_path=self.logs / log))

    def events(self) -> list[dict]:
        """This host's events.jsonl (it outlives the host's processes: it is on its disk)."""
        return read_jsonl(self.logs / "events.jsonl")


def install(root: Path, model_assets: dict[str, Path]) -> dict[str, str]:
    """Copy what a host needs to run the service into `root`; returns its model settings."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("asr_service", "config"):
        shutil.copytree(ROOT / tree, root / tree, ignore=skip)
    for module in ("celery_app.py", "wsgi.py"):
        shutil.copy2(ROOT / module, root / module)
    models = {}
    for kind, setting in (("asr", "asr_model"), ("vad", "asr_vad_model")):
        models[setting] = str(shutil.copytree(model_assets[kind],
                                              root / "models" / model_assets[kind].name))
    for own in ("home", "logs"):
        (root / own).mkdir()
    return models


@dataclass
class Hosts:
    """The three hosts, running."""

    lan: netns.Lan
    sites: dict[str, Site]
    password: str
    api_key: str
    began: float

    @property
    def api(self) -> str:
        return f"http://{self.lan['a'].address}:{API_PORT}/api/v1"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def redis(self) -> redis.Redis:
        return redis.Redis(host=self.lan["a"].address, port=REDIS_PORT, password=self.password,
                           socket_timeout=5, socket_connect_timeout=3)

    def get(self, path: str, timeout: float = 10, **params: object) -> dict:
        answer = requests.get(f"{self.api}{path}", params=params, headers=self.auth,
                              timeout=timeout)
        assert answer.ok, (answer.status_code, answer.text)
        return answer.json()

    def submit(self, data: bytes, filename: str, auth: bool = True) -> requests.Response:
        return requests.post(f"{self.api}/asr/submit", headers=self.auth if auth else {},
                             files={"audio": (filename, data, "audio/wav")}, timeout=30)

    def jobs(self) -> list[dict]:
        return self.get("/asr/history", limit=200)["items"]

    def finished(self, task_id: str, deadline: float) -> dict:
        """The job once it ended (long-polling), or an AssertionError at the deadline."""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"job {task_id} still {self.get(f'/asr/result/{task_id}')}"
            body = self.get(f"/asr/result/{task_id}", timeout=left + 10, wait=min(30, left))
            if body["status"] not in ("queued", "processing"):
                return body


@pytest.fixture
def lan() -> Iterator[netns.Lan]:
    if reason := netns.unavailable():
        pytest.skip(reason)
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    try:
        made = netns.Lan(HOSTS).up()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield made
    finally:
        made.close()
        assert not made.leftovers(), made.leftovers()


@pytest.fixture
def hosts(lan: netns.Lan, model_assets: dict[str, Path]) -> Iterator[Hosts]:
    """Redis and the API on A, a worker on B and one on C, each host from its own copy."""
    began = time.monotonic()
    # Host directories stand for the hosts' disks: outside /tmp, which each host has its own.
    base = Path(tempfile.mkdtemp(prefix="asr-multihost-", dir="/var/tmp"))
    password, api_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    redis_url = f"redis://{lan['a'].address}:{REDIS_PORT}/0"  # REDIS_PASSWORD goes apart
    sites: dict[str, Site] = {}
    try:
        for name in HOSTS:
            root = base / name
            root.mkdir()
            sites[name] = Site(lan, lan[name], root, Settings(
                redis_url=redis_url, redis_password=password, asr_use_gpu="false",
                asr_threads=1, worker_count=1, job_lease_s=LEASE_S, max_audio_seconds=600,
                log_dir=str(root / "logs"), **install(root, model_assets)))
        a = sites["a"]
        a.settings = replace(a.settings, api_host=a.host.address, api_port=API_PORT,
                             api_workers=1, api_keys=api_key)
        made = Hosts(lan, sites, password, api_key, began)

        conf = a.root / "redis.conf"  # the password stays out of `ps`
        conf.write_text(f"bind {a.host.address}\nport {REDIS_PORT}\nrequirepass {password}\n"
                        f'save ""\nappendonly no\ndir {a.root}\n')
        conf.chmod(0o600)
        a.start([shutil.which("redis-server") or "redis-server", conf], "redis.out",
                ready=made.redis().ping, ignoring=redis.ConnectionError, timeout=10)
        for name in WORKER_HOSTS:  # both load their model at the same time
            site = sites[name]
            where = subprocess.run(site.argv([sys.executable, "-c", FIND_SERVICE]),
                                   env=site.env(), cwd=site.root, capture_output=True,
                                   text=True, timeout=30)
            assert where.stdout.startswith(f"{site.root}/"), (where.stdout, where.stderr)
            site.start([sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                        "--pool=prefork", "--concurrency=1", "-n", "worker@%h",
                        "--without-mingle", "--without-gossip"], "worker.out",
                       ready=lambda: True, timeout=10)
        a.start([Path(sys.executable).parent / "gunicorn", "-c", "config/gunicorn.conf.py",
                 "wsgi:app"], "gunicorn.out",
                ready=lambda: requests.get(f"{made.api}/health", timeout=1).ok,
                ignoring=(requests.ConnectionError, requests.Timeout), timeout=30)
        cluster = Cluster(made.redis(), a.settings.queue_name)
        for name in WORKER_HOSTS:
            site = sites[name]
            worker = site.procs[0]  # ip netns exec, unshare and sh exec it: its pid is theirs

            def ready(pid: int = worker.pid) -> str | None:
                return next((w.hostname for w in cluster.workers()
                             if w.pid == pid and w.engines_ready), None)

            wait_ready(worker, ready, WORKER_START_S, site.logs / "worker.out", interval=0.2)
            site.node = ready() or ""
            assert site.node == f"worker@{site.host.hostname}", site.node
        print(f"\nmultihost: LAN {lan.subnet}, 3 hosts up in {time.monotonic() - began:.1f} s")
        yield made
    finally:
        try:
            for name in reversed(HOSTS):  # everything on every host, children included,
                lan.kill(name)              # the workers before the Redis they talk to
            for site in sites.values():
                for proc in site.procs:
                    proc.wait(timeout=10)
        finally:
            shutil.rmtree(base, ignore_errors=True)


FIND_SERVICE = "import importlib.util as u; print(u.find_spec('asr_service').origin)"


def test_a_worker_host_lost_mid_job_loses_nothing_and_runs_nothing_twice(hosts: Hosts):
    deadline = hosts.began + TEST_BUDGET_S
    b, c = hosts.sites["b"], hosts.sites["c"]
    audio = samples.encode("wav", LONG_S)
    # The API listens on the LAN: never without a key; Redis: never without its password.
    assert hosts.submit(audio, "anonymous.wav", auth=False).status_code == 401
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=hosts.lan["a"].address, port=REDIS_PORT, socket_timeout=5).ping()

    ids = []
    for i in range(JOBS):
        answer = hosts.submit(audio, f"j{i}.wav")
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["task_id"])

    def b_mid_job() -> dict | None:
        """A job B has been running for STRIKE_INTO_JOB_S, once B finished one before it
        (jobs flow through both workers)."""
        jobs = hosts.jobs()
        if not any(j["status"] == "succeeded" and j["worker"] == b.node for j in jobs):
            return None
        return next((j for j in jobs if j["status"] == "processing" and j["worker"] == b.node
                     and _epoch(j["started_at"]) < time.time() - STRIKE_INTO_JOB_S), None)

    running = eventually(b_mid_job, 40, interval=0.02, message="B never ran a second job")
    struck = time.time()
    hosts.lan.unplug("b")  # the machine vanishes from the network...
    killed = hosts.lan.kill("b")  # ...and everything on it dies
    victim = running["task_id"]
    into_job_s = struck - _epoch(running["started_at"])

    finished = {task_id: hosts.finished(task_id, deadline) for task_id in [victim, *ids]}
    recovery_s = _epoch(finished[victim]["finished_at"]) - struck

    statuses = Counter(job["status"] for job in finished.values())
    assert statuses == Counter(succeeded=JOBS), statuses
    texts = {job["result"]["text"] for job in finished.values()}
    assert len(texts) == 1, texts  # same audio, same transcript, wherever it ran
    assert finished[victim]["worker"] == c.node, finished[victim]

    # Exactly once, as Redis recorded each transition...
    started: Counter[str] = Counter()
    ends: dict[str, list[str]] = {i: [] for i in ids}
    requeued: dict[str, float] = {}
    for stream_id, entry in hosts.redis().xrange(Keys().events):
        kind, job_id = entry[b"type"].decode(), entry[b"job_id"].decode()
        if kind == "job.started":
            started[job_id] += 1
        elif kind == "job.finished":
            ends[job_id].append(entry[b"status"].decode())
        elif kind == "job.requeued":  # a stream id starts with its time in ms
            requeued[job_id] = int(stream_id.split(b"-")[0]) / 1000
    assert ends == {i: ["succeeded"] for i in ids}, ends
    assert started[victim] == 2 and started - Counter({victim: 1}) == Counter(ids), started
    assert list(requeued) == [victim], requeued  # B's job, once; nothing else moved
    # ...and as each worker host's own log tells it.
    succeeded = logged(lambda: b.events() + c.events(), "job.succeeded", ids)
    on_b, on_c = b.events(), c.events()
    assert succeeded == Counter(ids), succeeded
    done_on_b = {e["job_id"] for e in on_b if e["event"] == "job.succeeded"}
    done_on_c = {e["job_id"] for e in on_c if e["event"] == "job.succeeded"}
    assert done_on_b and done_on_c
    assert any(e["event"] == "job.started" and e["job_id"] == victim for e in on_b)
    assert victim in done_on_c and victim not in done_on_b

    # Nothing left queued or running; B's dead hands hold at most its interrupted delivery.
    cluster = Cluster(hosts.redis(), hosts.sites["a"].settings.queue_name)
    assert cluster.queue_depth() == 0
    assert {j["status"] for j in hosts.jobs()} == {"succeeded"}
    assert set(cluster.taken()) <= {victim}, cluster.taken()
    took = time.monotonic() - hosts.began
    report("multihost", jobs=JOBS, hosts=len(HOSTS), worker_hosts=len(WORKER_HOSTS),
           finished_by_b=len(done_on_b), finished_by_c=len(done_on_c),
           processes_killed_on_b=killed, struck_into_job_s=round(into_job_s, 2),
           lease_s=LEASE_S, requeued_after_s=round(requeued[victim] - struck, 1),
           victim_finished_after_s=round(recovery_s, 1),
           lost=JOBS - statuses["succeeded"], run_twice=sum(n - 1 for n in succeeded.values()),
           test_s=round(took, 1))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
