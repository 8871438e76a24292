"""What the install-artifact tests share: where the manifests are, and how to read them.

None of what an operator installs can be exercised for real here (no Slack, no cluster, no
Docker), so each is checked against the schema its consumer uses and against the promises
DESIGN.md makes about it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
HEALTHZ = "http://127.0.0.1:9100/healthz"  # liveness, on the admin port


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


def role_grants() -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in one_of_kind("Role")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted
