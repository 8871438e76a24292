"""The Kubernetes manifests of `deploy/`: valid Kubernetes, and the pod, probes, ports, network
policy, Service, mounts, ConfigMap and Secret as DESIGN.md promises them.
"""

from __future__ import annotations

import posixpath
from typing import Any

import kubernetes_validate
import pytest

from bot.config_loader import load_config, load_config_text
from tests.install_support import (
    DEPLOY,
    REPO,
    bot_container,
    deploy_documents,
    load_yaml,
    one_of_kind,
)

# --- Kubernetes manifests -----------------------------------------------------------------


@pytest.mark.parametrize(("filename", "document"), deploy_documents(), ids=lambda v: str(v)[:40])
def test_every_deploy_document_is_valid_kubernetes(filename: str, document: dict[str, Any]) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_rejects_a_misspelt_field() -> None:
    broken = one_of_kind("Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    listed = load_yaml(DEPLOY / "kustomization.yaml")["resources"]
    present = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert sorted(listed) == sorted(present)


def test_bot_runs_as_non_root_with_a_read_only_root_filesystem() -> None:
    deployment = one_of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = bot_container()
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    # SQLite has a single writer: never two pods at once, not even during an update.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    assert container["resources"]["requests"] and container["resources"]["limits"]


def container_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in bot_container()["ports"]}


def shipped_config() -> Any:
    return load_config_text(one_of_kind("ConfigMap")["data"]["config.yaml"])


def test_ports_are_the_configs_main_and_admin_ports() -> None:
    server = shipped_config().server
    assert container_ports() == {"http": server.port, "admin": server.admin_port}
    args = bot_container()["args"]
    assert args[args.index("--port") + 1] == str(server.port)
    assert args[args.index("--admin-port") + 1] == str(server.admin_port)
    annotations = one_of_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    # Prometheus scrapes /metrics where it is served: the admin port, never the main one.
    assert annotations["prometheus.io/port"] == str(server.admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_probes_start_and_ready_on_readyz_and_live_on_healthz_of_the_admin_port() -> None:
    container = bot_container()
    ports = container_ports()
    expected = {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == ports["admin"], probe
    # Liveness waits for start-up (Kubernetes holds it back until the startupProbe succeeds),
    # and start-up gets minutes for a slow API server, not the default 30 s.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_network_policy_admits_slack_from_the_ingress_and_metrics_from_monitoring() -> None:
    policy = one_of_kind("NetworkPolicy")
    pod_labels = one_of_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["metadata"]["namespace"] == one_of_kind("Deployment")["metadata"]["namespace"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    admitted = {}
    for rule in spec["ingress"]:
        [source] = rule["from"]
        namespace = source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        [port] = rule["ports"]
        admitted[port["port"]] = namespace
    # Each port from exactly one namespace: the admin port is never reachable from the ingress.
    assert admitted == {"http": "ingress-nginx", "admin": "monitoring"}
    assert set(admitted) == set(container_ports())


def test_network_policy_lets_out_only_dns_the_api_server_prometheus_and_slack() -> None:
    egress = one_of_kind("NetworkPolicy")["spec"]["egress"]
    allowed = {(p["port"], p.get("protocol", "TCP")) for rule in egress for p in rule["ports"]}
    assert allowed == {(53, "UDP"), (53, "TCP"), (6443, "TCP"), (9090, "TCP"), (443, "TCP")}
    for rule in egress:
        assert rule.get("to"), rule  # no rule without a destination (that would be "anywhere")
    [slack] = [rule for rule in egress if rule["ports"] == [{"port": 443, "protocol": "TCP"}]]
    [block] = slack["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    # HTTPS to public addresses only: not a way into other in-cluster services.
    assert set(block["ipBlock"]["except"]) == {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
    prometheus_port = int(shipped_config().prometheus.url.rsplit(":", 1)[1])
    assert (prometheus_port, "TCP") in allowed


def test_service_sends_port_80_to_the_bot() -> None:
    service = one_of_kind("Service")
    pod_labels = one_of_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    [port] = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in bot_container()["ports"]}
    assert port["port"] == 80
    assert ports.get(port["targetPort"], port["targetPort"]) == 3000
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_store_and_config_are_mounted_where_the_config_says() -> None:
    configmap = one_of_kind("ConfigMap")
    claim = one_of_kind("PersistentVolumeClaim")
    pod = one_of_kind("Deployment")["spec"]["template"]["spec"]
    container = bot_container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = {e["name"]: e for e in container["env"]}

    config = load_config_text(configmap["data"]["config.yaml"], source="deploy/configmap.yaml")
    data_volume = volumes[mounts[posixpath.dirname(config.store.path)]]
    assert data_volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"

    config_dir, config_file = posixpath.split(env["CANARY_CONFIG"]["value"])
    config_volume = volumes[mounts[config_dir]]
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_file in configmap["data"]


def test_configmap_ships_the_example_config_unchanged() -> None:
    shipped = one_of_kind("ConfigMap")["data"]["config.yaml"]
    example = REPO / "examples" / "config.yaml"
    assert shipped == example.read_text(encoding="utf-8")
    assert load_config_text(shipped) == load_config(example)


def test_slack_secrets_come_from_the_secret() -> None:
    secret = one_of_kind("Secret")
    env = {e["name"]: e for e in bot_container()["env"]}
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
