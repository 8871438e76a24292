"""What an operator installs: the Slack manifest, the Kubernetes manifests and the Dockerfile.

None of them can be exercised for real here (no Slack, no cluster, no Docker), so each is checked
against the schema its consumer uses and against the promises DESIGN.md makes about it.
"""

from __future__ import annotations

import http.server
import json
import posixpath
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from bot.config_loader import load_config, load_config_text

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
DEPLOY = REPO / "deploy"
HEALTHZ = "http://127.0.0.1:9100/healthz"  # liveness, on the admin port
BOT_SCOPES = {
    "commands",
    "chat:write",
    "files:write",
    "usergroups:read",
    "channels:history",
    "groups:history",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def deploy_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]


def one_of_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in deploy_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def bot_container() -> dict[str, Any]:
    containers = one_of_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# --- Slack app manifest -------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((FIXTURES / "slack" / "manifest.schema.1.0.0.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_manifest_is_valid_against_slacks_schema(
    manifest_validator: jsonschema.Draft7Validator,
) -> None:
    manifest = load_yaml(REPO / "manifest.yml")
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in manifest_validator.iter_errors(manifest)
    ]
    assert errors == []
    # The schema is strict enough to catch a misspelt key, so the check above means something.
    misspelt = {**manifest, "settings": {**manifest["settings"], "socket_mode": False}}
    assert not manifest_validator.is_valid(misspelt)


def test_manifest_asks_for_exactly_the_scopes_the_bot_uses() -> None:
    scopes = load_yaml(REPO / "manifest.yml")["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}
    assert sorted(scopes["bot"]) == sorted(BOT_SCOPES)


def test_manifest_routes_commands_and_clicks_to_the_events_endpoint() -> None:
    manifest = load_yaml(REPO / "manifest.yml")
    assert manifest["_metadata"]["major_version"] == 1
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/canary"
    assert command["should_escape"] is False
    for subcommand in ("start", "status", "list", "pause", "resume", "promote", "rollback"):
        assert subcommand in command["usage_hint"]
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert command["url"] == interactivity["request_url"]
    assert command["url"].startswith("https://")
    assert command["url"].endswith("/slack/events")
    assert manifest["settings"]["socket_mode_enabled"] is False


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


def test_rbac_is_namespaced_and_least_privilege() -> None:
    kinds = [doc["kind"] for _, doc in deploy_documents()]
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds
    role = one_of_kind("Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    made = {"get", "list", "create", "patch", "delete"}
    assert granted == {
        ("apps", "deployments"): made,
        ("apps", "deployments/scale"): {"patch"},
        ("apps", "replicasets"): {"list"},
        ("", "services"): made,
        ("", "events"): {"create"},
        ("networking.k8s.io", "ingresses"): made,
        ("networking.istio.io", "virtualservices"): {"get", "list", "update", "patch"},
        ("networking.istio.io", "destinationrules"): made | {"update"},
        ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "update", "patch"},
        ("argoproj.io", "rollouts"): {"get", "list", "update", "patch"},
        ("argoproj.io", "rollouts/status"): {"patch"},
        # job gates (rollout/gates/job.py): the Job, its pod and the pod's log
        ("batch", "jobs"): {"get", "create", "delete"},
        ("", "pods"): {"list"},
        ("", "pods/log"): {"get"},
    }


def test_rbac_covers_every_kind_of_call_the_gateway_makes() -> None:
    """Each client call in rollout/kube*.py maps to a verb the Role grants on its resource."""
    source = "".join(path.read_text() for path in sorted((REPO / "rollout").glob("kube*.py")))
    verbs = {
        "read": "get",
        "get": "get",
        "create": "create",
        "patch": "patch",
        "delete": "delete",
        "replace": "update",
        "list": "list",
    }
    calls = set(
        re.findall(
            r"self\._\w+\.(read|get|create|patch|delete|replace|list)_namespaced_(\w+)", source
        )
    )
    role = one_of_kind("Role")
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    kinds = {
        "deployment": "deployments",
        "deployment_scale": "deployments/scale",
        "replica_set": "replicasets",
        "service": "services",
        "event": "events",
        "ingress": "ingresses",
    }
    for action, kind in calls:
        if kind in kinds:
            assert (kinds[kind], verbs[action]) in granted, (action, kind)


def role_grants() -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in one_of_kind("Role")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def readme_rbac_table() -> dict[tuple[str, str], set[str]]:
    """The README's RBAC table: `| API group | resource | verbs | used by |` rows."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("| API group | resource | verbs | used by |")
    table: dict[tuple[str, str], set[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        group, resource, verbs = (cell.strip() for cell in line.strip("|").split("|")[:3])
        key = ("" if group == "(core)" else group, resource)
        assert key not in table, f"README lists {key} twice"
        table[key] = set(verbs.split())
    return table


def test_readme_rbac_table_is_the_role() -> None:
    """The README once promised list/watch/update on deployments and pods that the Role never
    granted; the table is now read back and must say exactly what deploy/role.yaml grants."""
    assert readme_rbac_table() == role_grants()


def test_role_binding_gives_the_role_to_the_bots_service_account() -> None:
    role, binding = one_of_kind("Role"), one_of_kind("RoleBinding")
    account = one_of_kind("ServiceAccount")
    pod = one_of_kind("Deployment")["spec"]["template"]["spec"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- Dockerfile ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def final_stage(instructions: list[dockerfile.Command]) -> list[dockerfile.Command]:
    last_from = max(i for i, c in enumerate(instructions) if c.cmd == "FROM")
    return instructions[last_from:]


def test_dockerfile_bases_are_pinned_by_digest(instructions: list[dockerfile.Command]) -> None:
    bases = [c.value[0] for c in instructions if c.cmd == "FROM"]
    assert len(bases) >= 2  # multi-stage: no build tools in the runtime image
    for base in bases:
        # A tag can be pushed again; a digest names one image. The tag stays for readers.
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), base


def test_dockerfile_installs_the_product_from_the_constraints(
    instructions: list[dockerfile.Command],
) -> None:
    runs = [" ".join(c.value) for c in instructions if c.cmd == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "no pip install in the Dockerfile"
    for run in installs:
        assert "-c constraints.txt" in run, run  # the versions CI tested, not the newest
        assert "--no-cache-dir" in run, run
    copied = [
        c.value
        for c in instructions
        if c.cmd == "COPY" and not any(f.startswith("--from=") for f in c.flags)
    ]
    sources = {part for value in copied for part in value[:-1]}
    assert "constraints.txt" in sources
    # The image is the product only: the sandbox distribution never goes in.
    assert not {"sandbox", "emulators", "tests", "."} & sources, sources


def test_dockerfile_final_stage_has_no_compiler_pip_or_source(
    instructions: list[dockerfile.Command],
) -> None:
    stage = final_stage(instructions)
    copies = [c for c in stage if c.cmd == "COPY"]
    assert copies, "the runtime stage copies nothing"
    for copy in copies:
        assert any(flag.startswith("--from=") for flag in copy.flags), copy.original
        assert copy.value == ("/opt/venv", "/opt/venv"), copy.original
    runs = " ".join(" ".join(c.value) for c in stage if c.cmd == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the runtime stage runs {tool!r}"
    build_runs = " ".join(" ".join(c.value) for c in instructions if c.cmd == "RUN")
    assert "pip uninstall --yes pip" in build_runs  # no pip left in the copied venv


def test_dockerfile_runs_as_a_non_root_user(instructions: list[dockerfile.Command]) -> None:
    users = [c.value[0] for c in final_stage(instructions) if c.cmd == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit()  # numeric, so Kubernetes' runAsNonRoot can verify it


def test_dockerfile_checks_health_on_the_admin_port_and_serves_on_3000(
    instructions: list[dockerfile.Command],
) -> None:
    stage = final_stage(instructions)
    [healthcheck] = [c for c in stage if c.cmd == "HEALTHCHECK"]
    assert healthcheck.value[0] == "CMD"
    assert HEALTHZ in " ".join(healthcheck.value)
    by_cmd = {c.cmd: c.value for c in stage}
    assert by_cmd["EXPOSE"] == ("3000", "9100")
    assert by_cmd["ENTRYPOINT"] == ("canary-bot",)
    command = list(by_cmd["CMD"])
    assert command[:1] == ["serve"]
    assert command[command.index("--port") + 1] == "3000"
    assert command[command.index("--admin-port") + 1] == "9100"


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_follows_healthz(
    instructions: list[dockerfile.Command], status: int, healthy: bool
) -> None:
    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    [healthcheck] = [c for c in final_stage(instructions) if c.cmd == "HEALTHCHECK"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        argv = [arg.replace(HEALTHZ, local) for arg in healthcheck.value[1:]]
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert (result.returncode == 0) is healthy, result.stderr
