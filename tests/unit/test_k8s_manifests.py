"""deploy/k8s renders with `kubectl kustomize`, every object passes its schema (Kubernetes' own,
KEDA's vendored), and the rules of tests/k8s_rules.py hold; a broken manifest is caught."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from scripts.capacity_model import RATE_SHARE, Scenario
from tests import k8s_rules as rules

pytestmark = pytest.mark.skipif(rules.kubectl() is None,
                                reason="kubectl is not installed (it renders the manifests)")

OVERLAYS = ("cpu-dev", "gpu")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[rules.Obj]]:
    """Each overlay, and the base with the Sentinel component (the redis-sentinel trigger)."""
    sentinel = tmp_path_factory.mktemp("sentinel")
    (sentinel / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(rules.K8S / 'base', sentinel)}]\n"
        f"components: [{os.path.relpath(rules.K8S / 'components' / 'sentinel', sentinel)}]\n")
    variants = {name: rules.K8S / "overlays" / name for name in OVERLAYS}
    return {name: rules.render(path) for name, path in {**variants, "sentinel": sentinel}.items()}


VARIANTS = (*OVERLAYS, "sentinel")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_passes_its_schema(rendered, variant):
    objs = rendered[variant]
    assert {"Deployment", "ScaledObject", "TriggerAuthentication", "NetworkPolicy",
            "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"} <= \
        {o["kind"] for o in objs}
    assert [e for o in objs for e in rules.schema_errors(o)] == []


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.__name__)
def test_deployment_rules_hold(rendered, variant, rule):
    assert rule(rendered[variant]) == []


def test_gpu_workers_get_one_gpu_on_gpu_nodes_only(rendered):
    assert rules.gpu_problems(rendered["gpu"]) == []
    assert rules.gpu_problems(rendered["cpu-dev"])  # the dev overlay has none, on purpose


def test_one_scaled_object_per_model_queue_with_the_simulated_choice(rendered):
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"]
              for s in rules.of_kind(rendered["gpu"], "ScaledObject")}
    assert set(scaled) == {w["metadata"]["name"] for w in rules.workers(rendered["gpu"])}
    paraformer = scaled["asr-worker-paraformer"]
    assert paraformer["minReplicaCount"] == 0  # the default model scales from zero
    assert paraformer["triggers"][0]["metadata"]["listLength"] == "32"
    assert paraformer["cooldownPeriod"] == 300  # docs/capacity.md
    behavior = paraformer["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == paraformer["cooldownPeriod"]
    # The throughput trigger that keeps the list trigger from oscillating on fast jobs.
    rate = [t for t in paraformer["triggers"] if t["type"] == "prometheus"]
    assert [t["metadata"]["threshold"] for t in rate] == ["4.8"]
    assert float(rate[0]["metadata"]["threshold"]) == round(RATE_SHARE / Scenario().service_s, 1)
    sentinel = rules.of_kind(rendered["sentinel"], "ScaledObject")
    assert {t["type"] for s in sentinel for t in s["spec"]["triggers"]} == {"redis-sentinel"}


def _worker(objs: list[rules.Obj]) -> rules.Obj:
    return rules.named(objs, "Deployment", "asr-worker-paraformer")


BREAKAGES = {
    "prefetch": (rules.prefetch_problems, lambda o: rules.containers(_worker(o))[0]["command"]
                 .remove("--disable-prefetch")),
    "grace": (rules.grace_problems, lambda o: _worker(o)["spec"]["template"]["spec"]
              .update(terminationGracePeriodSeconds=600)),
    "readiness": (rules.probe_problems, lambda o: rules.containers(_worker(o))[0]
                  .update(readinessProbe={"tcpSocket": {"port": 8000}})),
    "secret literal": (rules.secret_problems, lambda o: rules.containers(_worker(o))[0]["env"]
                       .append({"name": "REDIS_PASSWORD", "value": "hunter2"})),
    "secret object": (rules.secret_problems, lambda o: o.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "asr-secrets"},
         "stringData": {"redis-password": "change-me"}})),
    "no budget": (rules.disruption_problems, lambda o: o.remove(
        rules.named(o, "PodDisruptionBudget", "asr-worker-paraformer"))),
    "open worker": (rules.network_problems, lambda o: o.append(
        {"kind": "NetworkPolicy", "metadata": {"name": "x"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}})),
    "wrong queue": (rules.scaling_problems, lambda o: rules.named(
        o, "ScaledObject", "asr-worker-paraformer")["spec"]["triggers"][0]["metadata"]
        .update(listName="asr-other")),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_manifest_is_caught(rendered, breakage):
    rule, breaks = BREAKAGES[breakage]
    objs = copy.deepcopy(rendered["gpu"])
    breaks(objs)
    assert rule(objs)


def test_a_keda_field_of_the_wrong_type_fails_its_schema(rendered):
    scaled = copy.deepcopy(rules.of_kind(rendered["gpu"], "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 32  # KEDA wants strings here
    scaled["spec"]["coolDownPeriod"] = 60  # a misspelt field
    assert len(rules.schema_errors(scaled)) == 2


def test_vendored_keda_schemas_say_where_they_came_from():
    readme = (Path(rules.KEDA_SCHEMAS) / "README.md").read_text()
    assert "cloudcoil-models-keda" in readme and "2.16.1.0" in readme


def test_a_misspelt_kubernetes_field_fails_its_schema(rendered):
    worker = copy.deepcopy(_worker(rendered["gpu"]))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 3660
    assert "terminationGracePeriod' was unexpected" in " ".join(rules.schema_errors(worker))
