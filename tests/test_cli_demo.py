"""`canary-bot demo` lives in the sandbox distribution and is found through an entry point.

A production install has no sandbox: the command must then say, on one line, how to get it,
and exit non-zero. (`scripts/check-lean-install`, run by CI, proves the same in a real
product-only virtualenv; here the lookup is emptied in-process.)
"""

from __future__ import annotations

from importlib.metadata import EntryPoints

import pytest

from bot import cli


def test_demo_entry_point_of_the_installed_sandbox_is_its_run_demo() -> None:
    found = cli.entry_points(group=cli.DEMO_ENTRY_POINT_GROUP, name="demo")
    [entry] = list(found)
    from canary_sandbox.demo import run_demo

    assert entry.load() is run_demo


def test_demo_without_the_sandbox_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda **_: EntryPoints(()))

    assert cli.main(["demo", "--scripted"]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "pip install 'canary-bot[demo]'" in err
