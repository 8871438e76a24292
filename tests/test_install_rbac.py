"""The bot's RBAC in `deploy/`: a namespaced, least-privilege Role covering every kind of call
the gateway makes, bound to the bot's service account, and the README's table saying exactly
what it grants.
"""

from __future__ import annotations

import re

from tests.install_support import REPO, deploy_documents, one_of_kind, role_grants


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
