"""`canary-bot check-config PATH`: validate a config file before it reaches the cluster.

Meant for a CI step or a pre-commit hook on the repository that holds the config, so the exit
code is the verdict and the problems go to stderr, one per line, in file order.
"""

from __future__ import annotations

from typing import TextIO

from bot.config_loader import ConfigError, describe_config, load_config


def run_check_config(path: str, *, out: TextIO, err: TextIO) -> int:
    """Print the one-line summary (exit 0) or every problem with its key and line (exit 1)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"{path}: {count} problem{'' if count == 1 else 's'}", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return 1
    print(describe_config(config), file=out)
    return 0
