"""The high-availability install (deploy-ha/, a kustomize overlay of deploy/).

No cluster and no kustomize binary here, so the overlay is rendered the way kustomize renders
what it uses (resources, a base directory, RFC 6902 patches by target, a strategic-merge
`$patch: delete`), and the result is checked against the Kubernetes schemas and against what
DESIGN.md ("High availability") promises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.install_support import REPO, load_yaml

OVERLAY = REPO / "deploy-ha"
LABELS = {"app.kubernetes.io/name": "canary-bot"}
Doc = dict[str, Any]


def _identity(doc: Doc) -> tuple[str, str, str, str | None]:
    meta = doc["metadata"]
    return (doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))


def _targets(doc: Doc, target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    return (
        doc["kind"] == target["kind"]
        and doc["metadata"]["name"] == target["name"]
        and group == target.get("group", "")
        and version == target["version"]
    )


def render(directory: Path) -> list[Doc]:
    kustomization = load_yaml(directory / "kustomization.yaml")
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory.name}: {resource} does not resolve"
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kustomization.get("patches", []):
        body = load_yaml(directory / patch["path"])
        if "target" in patch:
            matched = [i for i, doc in enumerate(docs) if _targets(doc, patch["target"])]
            assert len(matched) == 1, f"{patch['path']}: target matches {len(matched)} documents"
            docs[matched[0]] = jsonpatch.apply_patch(docs[matched[0]], body)
        else:
            assert body.pop("$patch") == "delete", f"{patch['path']}: only deletes are used"
            gone = [doc for doc in docs if _identity(doc) == _identity(body)]
            assert len(gone) == 1, f"{patch['path']}: deletes {len(gone)} documents"
            docs.remove(gone[0])
    return docs


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render(OVERLAY)


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    [bot] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(bot)


def test_every_overlay_file_is_used_but_the_secret_template() -> None:
    kustomization = load_yaml(OVERLAY / "kustomization.yaml")
    used = {r for r in kustomization["resources"] if not r.startswith("..")}
    used |= {p["path"] for p in kustomization["patches"]}
    present = {p.name for p in OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(present - used) == ["secret-store.yaml"]


def test_rendered_overlay_is_valid_kubernetes(rendered: list[Doc]) -> None:
    version = kubernetes_validate.latest_version()
    for doc in rendered:
        kubernetes_validate.validate(doc, version, strict=True)
    kinds = sorted(d["kind"] for d in rendered)
    assert "PersistentVolumeClaim" not in kinds
    assert kinds.count("PodDisruptionBudget") == 1


def test_three_replicas_rolled_one_at_a_time_with_no_volume(rendered: list[Doc]) -> None:
    deployment = only(rendered, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    assert [m["name"] for m in container(rendered)["volumeMounts"]] == ["config", "tmp"]


def test_spread_across_nodes_and_a_disruption_budget(rendered: list[Doc]) -> None:
    pod = only(rendered, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"] == LABELS
    spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    by_node = spread["kubernetes.io/hostname"]
    assert (by_node["maxSkew"], by_node["whenUnsatisfiable"]) == (1, "DoNotSchedule")
    assert all(c["labelSelector"]["matchLabels"] == LABELS for c in spread.values())
    budget = only(rendered, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == LABELS
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["metadata"]["namespace"] == only(rendered, "Deployment")["metadata"]["namespace"]


def test_pod_name_and_the_database_url_come_from_the_pod_and_a_secret(
    rendered: list[Doc],
) -> None:
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    ref = env["CANARY_STORE_URL"]["valueFrom"]["secretKeyRef"]
    template = load_yaml(OVERLAY / "secret-store.yaml")
    assert ref["name"] == template["metadata"]["name"]
    assert ref["key"] in template["stringData"]
    assert template["stringData"][ref["key"]].startswith("postgresql://")
    # The Slack secrets still come from the base's Secret.
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "CANARY_CONFIG"} <= set(env)


def test_lease_rbac_is_in_the_bots_namespace_and_only_in_the_overlay(
    rendered: list[Doc],
) -> None:
    account = only(rendered, "ServiceAccount")
    namespace = account["metadata"]["namespace"]
    role = only(rendered, "Role", "canary-bot-leader-election")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    binding = only(rendered, "RoleBinding", "canary-bot-leader-election")
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace}
    ]
    # Exactly the calls rollout/lease.py makes.
    source = (REPO / "rollout" / "lease.py").read_text()
    calls = set(re.findall(r"self\._api\.(\w+)_namespaced_lease", source))
    assert calls == {"read", "create", "replace"}
    # The single-replica install holds no Lease and gets no such grant.
    base = render(REPO / "deploy")
    assert not any(
        "leases" in rule["resources"] for d in base if d["kind"] == "Role" for rule in d["rules"]
    )


def test_lease_namespace_of_the_shipped_config_is_the_bots(rendered: list[Doc]) -> None:
    config = yaml.safe_load(only(rendered, "ConfigMap")["data"]["config.yaml"])
    ha = config.get("ha") or {}
    namespace = only(rendered, "ServiceAccount")["metadata"]["namespace"]
    assert ha.get("lease_namespace", "canary-bot") == namespace


def test_replicas_may_reach_the_database(rendered: list[Doc]) -> None:
    egress = only(rendered, "NetworkPolicy")["spec"]["egress"]
    ports = {p["port"] for rule in egress for p in rule.get("ports", [])}
    assert 5432 in ports
