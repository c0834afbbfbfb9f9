"""What deploy/k8s must hold, as checks over rendered objects: each returns the problems found
(empty: the rule holds), so a test can also show that a broken manifest is caught."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMAS = Path(__file__).resolve().parent / "data" / "keda"
KUBERNETES_VERSION = "1.32.0"  # the schemas checked against (kubernetes-validate ships them)

SOFT_SHUTDOWN_S = 30
"""What a worker needs beyond its longest job to stop: Celery's soft shutdown and its goodbye
writes (heartbeat withdrawn, ready file removed)."""

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEYS|BASIC_AUTH|CREDENTIAL", re.I)
"""Variables that hold a secret: they may come from a secretKeyRef only."""

Obj = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(kustomization: Path) -> list[Obj]:
    """`kubectl kustomize` of a directory, as objects."""
    out = subprocess.run([kubectl() or "kubectl", "kustomize", "--load-restrictor",
                          "LoadRestrictionsNone", str(kustomization)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@cache
def keda_schema(kind: str) -> Obj:
    return json.loads((KEDA_SCHEMAS / f"{kind.lower()}.json").read_text())


def schema_errors(obj: Obj) -> list[str]:
    """The object against Kubernetes' own schema, or KEDA's for its custom resources."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion", "").startswith("keda.sh/"):
        import jsonschema_rs

        validator = jsonschema_rs.validator_for(keda_schema(obj["kind"]))
        return [f"{name}: {e.message} at {list(e.instance_path)}"
                for e in validator.iter_errors(obj)]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {exc.message} at {list(exc.path)}"]
    return []


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind}/{name}"
    return found[0]


def workers(objs: list[Obj]) -> list[Obj]:
    return [d for d in of_kind(objs, "Deployment")
            if d["metadata"]["name"].startswith("asr-worker-")]


def containers(deployment: Obj) -> list[Obj]:
    return deployment["spec"]["template"]["spec"]["containers"]


def env(objs: list[Obj], container: Obj) -> dict[str, Any]:
    """A container's variables: its ConfigMaps' data, then its own `env` (which wins)."""
    values: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            values.update(named(objs, "ConfigMap", ref["name"]).get("data", {}))
    for var in container.get("env", []):
        values[var["name"]] = var.get("value", var.get("valueFrom"))
    return values


def pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions In/NotIn/Exists) matches these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or \
                (op == "NotIn" and value in expr["values"]) or \
                (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def pods(objs: list[Obj]) -> Iterator[tuple[str, dict[str, str]]]:
    for kind in ("Deployment", "StatefulSet"):
        for o in of_kind(objs, kind):
            yield o["metadata"]["name"], pod_labels(o)


# --- the rules ---

def probe_problems(objs: list[Obj]) -> list[str]:
    """The API is ready on /api/v1/health after a startup probe; a worker is ready when its
    model is loaded: an exec `test -f` of its WORKER_READY_FILE."""
    problems = []
    api = containers(named(objs, "Deployment", "asr-api"))[0]
    for probe in ("readinessProbe", "startupProbe"):
        if api.get(probe, {}).get("httpGet", {}).get("path") != "/api/v1/health":
            problems.append(f"asr-api: {probe} is not an httpGet of /api/v1/health")
    for worker in workers(objs):
        c = containers(worker)[0]
        ready_file = env(objs, c).get("WORKER_READY_FILE")
        if not ready_file:
            problems.append(f"{worker['metadata']['name']}: no WORKER_READY_FILE")
        for probe in ("readinessProbe", "startupProbe"):
            if c.get(probe, {}).get("exec", {}).get("command") != ["test", "-f", ready_file]:
                problems.append(f"{worker['metadata']['name']}: {probe} is not `test -f "
                                f"{ready_file}` (the model-loaded signal)")
    return problems


def grace_problems(objs: list[Obj]) -> list[str]:
    """A scaled-in worker gets long enough to finish its longest job, then to shut down."""
    problems = []
    for worker in workers(objs):
        limit = int(env(objs, containers(worker)[0])["TASK_TIME_LIMIT_S"])
        grace = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace < limit + SOFT_SHUTDOWN_S:
            problems.append(f"{worker['metadata']['name']}: terminationGracePeriodSeconds "
                            f"{grace} < TASK_TIME_LIMIT_S {limit} + {SOFT_SHUTDOWN_S}")
    return problems


def prefetch_problems(objs: list[Obj]) -> list[str]:
    """Prefetch off: the queue list KEDA reads is the whole backlog."""
    return [f"{w['metadata']['name']}: the worker runs without --disable-prefetch"
            for w in workers(objs)
            if "--disable-prefetch" not in containers(w)[0].get("command", [])]


def secret_problems(objs: list[Obj]) -> list[str]:
    """No secret value in any manifest: no Secret object, secrets only through secretKeyRef."""
    problems = [f"Secret/{o['metadata']['name']} is in the manifests: create it with kubectl "
                "(docs/kubernetes.md) so no file holds a usable value"
                for o in of_kind(objs, "Secret")]
    for o in of_kind(objs, "ConfigMap"):
        problems += [f"ConfigMap/{o['metadata']['name']}: {k} looks like a secret"
                     for k in o.get("data", {}) if SECRET_NAME.search(k)]
    for kind in ("Deployment", "StatefulSet"):
        for o in of_kind(objs, kind):
            for c in containers(o):
                for var in c.get("env", []):
                    if SECRET_NAME.search(var["name"]) and \
                            "secretKeyRef" not in var.get("valueFrom", {}):
                        problems.append(f"{o['metadata']['name']}: {var['name']} is not a "
                                        "secretKeyRef")
                if re.search(r"requirepass\s+[\"']?[^\"'$\s]", " ".join(c.get("command", []))):
                    problems.append(f"{o['metadata']['name']}: a literal password in its command")
    for auth in of_kind(objs, "TriggerAuthentication"):
        if set(auth["spec"]) != {"secretTargetRef"}:
            problems.append(f"TriggerAuthentication/{auth['metadata']['name']}: auth from "
                            "something other than Secrets")
    return problems


def disruption_problems(objs: list[Obj]) -> list[str]:
    """Every worker group and the API have a PodDisruptionBudget."""
    budgets = of_kind(objs, "PodDisruptionBudget")
    return [f"{d['metadata']['name']}: no PodDisruptionBudget"
            for d in [*workers(objs), named(objs, "Deployment", "asr-api")]
            if not any(selects(b["spec"]["selector"], pod_labels(d)) for b in budgets)]


def scaling_problems(objs: list[Obj]) -> list[str]:
    """One ScaledObject per worker group, on that group's queue, with auth from Secrets."""
    problems = []
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objs, "ScaledObject")}
    auths = {a["metadata"]["name"] for a in of_kind(objs, "TriggerAuthentication")}
    for worker in workers(objs):
        name = worker["metadata"]["name"]
        if name not in scaled:
            problems.append(f"{name}: no ScaledObject")
            continue
        queue = env(objs, containers(worker)[0]).get("QUEUE_NAME", "asr")
        lists = [t for t in scaled[name]["spec"]["triggers"] if t["type"].startswith("redis")]
        if not lists:
            problems.append(f"{name}: no redis trigger on its queue")
        for trigger in lists:
            meta = trigger["metadata"]
            if meta.get("listName") != queue:
                problems.append(f"{name}: its trigger reads {meta.get('listName')}, the "
                                f"workers consume {queue}")
            if "activationListLength" not in meta or "listLength" not in meta:
                problems.append(f"{name}: listLength and activationListLength must be set")
            if trigger.get("authenticationRef", {}).get("name") not in auths:
                problems.append(f"{name}: trigger without a TriggerAuthentication")
    return problems


def network_problems(objs: list[Obj]) -> list[str]:
    """Only the API is reachable from outside the namespace; every pod is under a policy."""
    problems = []
    policies = [p for p in of_kind(objs, "NetworkPolicy")
                if "Ingress" in p["spec"].get("policyTypes", [])]
    for name, labels in pods(objs):
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        if not mine:
            problems.append(f"{name}: no NetworkPolicy selects it (open to all)")
        open_to_all = any(not rule.get("from") for p in mine for rule in p["spec"]["ingress"])
        if open_to_all and name != "asr-api":
            problems.append(f"{name}: reachable from outside the namespace")
    return problems


def ingress_problems(objs: list[Obj]) -> list[str]:
    """The Ingress lets the largest upload and the longest wait through."""
    api = env(objs, containers(named(objs, "Deployment", "asr-api"))[0])
    problems = []
    for ing in of_kind(objs, "Ingress"):
        notes = ing["metadata"].get("annotations", {})
        body = notes.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")
        if int(body.rstrip("m")) <= int(api["MAX_UPLOAD_MB"]):
            problems.append(f"Ingress: proxy-body-size {body} <= MAX_UPLOAD_MB "
                            f"{api['MAX_UPLOAD_MB']} (+ multipart overhead)")
        read = int(notes.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60"))
        if read <= max(60, int(api["SYNC_TIMEOUT_S"])):
            problems.append(f"Ingress: proxy-read-timeout {read} s does not outlast a long-poll "
                            "(60 s) or a synchronous call (SYNC_TIMEOUT_S "
                            f"{api['SYNC_TIMEOUT_S']})")
    return problems


def gpu_problems(objs: list[Obj]) -> list[str]:
    """GPU workers ask for one GPU and run only on (tainted) GPU nodes."""
    problems = []
    for worker in workers(objs):
        spec = worker["spec"]["template"]["spec"]
        limits = containers(worker)[0].get("resources", {}).get("limits", {})
        if str(limits.get("nvidia.com/gpu")) != "1":
            problems.append(f"{worker['metadata']['name']}: no nvidia.com/gpu limit")
        if not spec.get("nodeSelector") or not spec.get("tolerations"):
            problems.append(f"{worker['metadata']['name']}: no nodeSelector/tolerations")
    return problems


RULES = (probe_problems, grace_problems, prefetch_problems, secret_problems,
         disruption_problems, scaling_problems, network_problems, ingress_problems)
