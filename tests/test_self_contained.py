"""The repository stands alone: a clone anywhere, with nothing beside it, passes its own tests.

Every fixture (CRDs, Slack's manifest schema) is a file of the repository. A path that climbs
out of it (to a sibling directory of the clone) or names one machine's directories would pass on the
machine that wrote it and fail in a user's clone, so no tracked text file may contain one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A sibling `shared` directory, or an absolute path into a home, a workspace or a CI
# runner's checkout.
OUTSIDE = re.compile(r"\.\./shared\b|(?<![\w.])/(?:work|root|home|Users|runner|builds)/[\w.-]+")
# Upstream copies that we carry unchanged, and binaries.
NOT_OURS = re.compile(r"^sandbox/src/emulators/kube/crds/.*\.yaml$|^tests/fixtures/slack/.*\.json$")
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".toml",
    ".yaml",
    ".yml",
    ".cfg",
    ".ini",
    ".txt",
    ".json",
    ".js",
    ".html",
    ".css",
    ".sh",
    "",
}


def tracked_text_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"this test needs the git checkout and git itself: {error}")
    names = [n for n in listed.split("\0") if n]
    return [n for n in names if Path(n).suffix in TEXT_SUFFIXES and not NOT_OURS.match(n)]


def test_no_tracked_file_reads_a_path_outside_the_repository() -> None:
    files = tracked_text_files()
    assert len(files) > 100, "git listed too few files to be this repository"
    found = []
    for name in files:
        path = REPO / name
        if not path.is_file():  # deleted in the work tree but still in the index
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


# The bad examples are assembled here, so that this file passes its own scan.
UP, ROOT = "..", "/"


@pytest.mark.parametrize(
    ("line", "outside"),
    [
        (f'CRDS = Path("{ROOT}work/shared/crds")', True),
        (f"see {UP}/shared/crds", True),
        (f'home = Path("{ROOT}home/ci/checkout")', True),
        ("crd_dir=BUNDLED_CRDS", False),
        (f"https://example.com{ROOT}work/items", False),
        ("/var/lib/canary-bot/canary.db", False),
    ],
)
def test_the_pattern_catches_what_it_should(line: str, outside: bool) -> None:
    assert bool(OUTSIDE.search(line)) is outside


def test_the_emulator_carries_every_crd_with_its_source() -> None:
    crds = REPO / "sandbox" / "src" / "emulators" / "kube" / "crds"
    files = sorted(p.name for p in crds.glob("*.yaml"))
    assert files == [
        "argo-rollouts-rollout.yaml",
        "gateway-api-httproute.yaml",
        "istio-destinationrule.yaml",
        "istio-virtualservice.yaml",
    ]
    readme = (crds / "README.md").read_text()
    for name in files:
        assert name in readme, f"crds/README.md does not say where {name} comes from"
    assert "Apache-2.0" in readme
