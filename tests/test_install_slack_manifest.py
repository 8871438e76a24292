"""The Slack app manifest: valid against Slack's own schema, asking for exactly the scopes the
bot uses, and routing commands and clicks to the bot's events endpoint.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.install_support import REPO, load_yaml

FIXTURES = REPO / "tests" / "fixtures"
BOT_SCOPES = {
    "commands",
    "chat:write",
    "files:write",
    "usergroups:read",
    "channels:history",
    "groups:history",
}

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
