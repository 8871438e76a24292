"""`canary-bot serve | demo | check-config | audit | release` — the console script.

Start-up problems (a missing secret, a bad config, no cluster credentials) end the process with
one line on stderr naming what is wrong, and exit status 2.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import FrameType
from typing import TYPE_CHECKING

from bot import audit_cli, release
from bot.check_config import run_check_config
from bot.config_loader import ConfigError, load_config
from bot.ha import exit_lost_lease
from bot.kube import ClusterConfigError
from bot.runtime import Runtime, Secrets, StartupError
from bot.shutdown import STOP_DEADLINE_S
from rollout.config import Config
from rollout.stores import store_url
from rollout.stores.lock import InstanceLock, StoreInUse

if TYPE_CHECKING:
    from bot.server import AdminServer, HttpServer

log = logging.getLogger("canary-bot")

DEMO_ENTRY_POINT_GROUP = "canary_bot.commands"
DEMO_INSTALL_HINT = (
    "canary-bot demo needs the sandbox: pip install 'canary-bot[demo]'"
    " (from a clone: pip install -c constraints.txt -e '.[demo]' -e ./sandbox)"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CANARY_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "check-config":
        return run_check_config(args.path, out=sys.stdout, err=sys.stderr)
    if args.command == "demo":
        return _demo(args)
    if args.command == "release":
        return release.run_from_cli(args)
    try:
        if args.command == "audit":
            return audit_cli.run(args, out=sys.stdout, err=sys.stderr, find_config=config_path)
        return _serve(args)
    except (StartupError, ClusterConfigError) as error:
        print(f"canary-bot: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"canary-bot: invalid config: {'; '.join(map(str, error.problems))}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    """Run the sandbox's demo, found through its entry point.

    The demo and the emulators it stands on are the `canary-bot-sandbox` distribution; a
    production install does not have them, and the product's code never imports them.
    """
    found = entry_points(group=DEMO_ENTRY_POINT_GROUP, name="demo")
    if not found:
        print(DEMO_INSTALL_HINT, file=sys.stderr)
        return 2
    run_demo = next(iter(found)).load()
    result: int = run_demo(
        out=sys.stdout, scripted=args.scripted, port=args.port, open_browser=not args.no_browser
    )
    return result


def _serve(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    secrets = Secrets.from_env(os.environ, socket_mode=args.socket_mode)
    lock = _single_instance(config)
    runtime = Runtime(config=config, secrets=secrets, on_lost_lease=exit_lost_lease)
    from bot.server import AdminServer, HttpServer

    # Both servers listen before start-up reconciliation begins (it runs in the background):
    # /healthz answers at once, /readyz once the cluster has been reconciled.
    admin_port = _port(args.admin_port, config.server.admin_port)
    servers: list[AdminServer | HttpServer] = [
        AdminServer(runtime, host=args.host, port=admin_port)
    ]
    if not args.socket_mode:
        port = _port(args.port, config.server.port)
        servers.append(HttpServer(runtime, host=args.host, port=port))
    # Before anything runs beside this thread: what start-up built stays, and what the
    # servers and the beat make later is collected as usual.
    _freeze_start_up_objects()
    for server in servers:
        server.start()
    # Socket Mode keeps Python's own SIGINT and SIGTERM: its client runs in this thread.
    signalled = [] if args.socket_mode else _stop_servers_on_signal(servers)
    runtime.start()
    log.info(
        "canary-bot listening on %s (cluster %s)",
        ", ".join(server.url for server in servers),
        config.cluster_name,
    )
    if args.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        assert secrets.app_token is not None
        SocketModeHandler(runtime.app, secrets.app_token).start()  # type: ignore[no-untyped-call]
        return 0

    servers[-1].wait()
    # The stop's deadline counts from the signal: stopping the servers came out of it.
    spent = time.monotonic() - signalled[0] if signalled else 0.0
    unfinished = runtime.stop(deadline=max(STOP_DEADLINE_S - spent, 1.0))
    if lock is not None:
        lock.release()
    if unfinished:
        # A part still waits on work in flight (named in the log): leave without it, as the
        # kubelet's SIGKILL would a few seconds later. Python's exit would join its threads.
        logging.shutdown()
        os._exit(0)
    return 0


def _stop_servers_on_signal(servers: Sequence[AdminServer | HttpServer]) -> list[float]:
    """SIGTERM and SIGINT stop the servers, from the moment they listen (a pod can be stopped
    while it starts up); the list gets the monotonic time of the first signal."""
    signalled: list[float] = []

    def shutdown(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %s", signum)
        signalled.append(time.monotonic())
        for server in servers:
            server.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    return signalled


def _freeze_start_up_objects() -> None:
    """Keep the garbage collector off what start-up built, for good.

    The modules, clients and config loaded by now are about 200,000 objects that live as long
    as the process; every full collection walked all of them, holding the GIL for 50-100 ms
    on this machine, and whichever acknowledgements were in flight waited that long
    (bench/ack.py's p99 was such rounds). `gc.freeze` moves them where collections never
    look; objects made from now on are collected as before. Collected once first, so no
    garbage is frozen with them."""
    gc.collect()
    gc.freeze()


def _single_instance(config: Config) -> InstanceLock | None:
    """On SQLite, hold the file's lock for the life of this `serve` (rollout/stores/lock.py):
    a second one on the same file stops here with one line. PostgreSQL takes several."""
    if store_url(config.store.url, os.environ):
        return None
    lock = InstanceLock(config.store.path)
    try:
        lock.acquire()
    except StoreInUse as error:
        raise StartupError(str(error)) from None
    return lock


def config_path(given: str | None) -> str:
    """`--config`, else `$CANARY_CONFIG`: how every command that needs the config finds it."""
    path = given or os.environ.get("CANARY_CONFIG")
    if not path:
        raise StartupError("no config: pass --config PATH or set CANARY_CONFIG")
    return path


def _port(given: int | None, configured: int) -> int:
    return configured if given is None else given


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canary-bot", description="Kubernetes canary releases from Slack."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bot (HTTP mode unless --socket-mode)")
    serve.add_argument("--config", help="config file (default: $CANARY_CONFIG)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=int, help="main port: /slack/events (default: server.port, 3000)"
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        help="admin port: /healthz, /readyz, /metrics (default: server.admin_port, 9100)",
    )
    serve.add_argument("--socket-mode", action="store_true", help="development: Socket Mode")
    demo = sub.add_parser(
        "demo",
        help="try it locally: a Slack-like page on 127.0.0.1 with an emulated cluster",
    )
    demo.add_argument(
        "--scripted",
        action="store_true",
        help="no browser: play a promotion and a rollback, print them, exit non-zero on failure",
    )
    demo.add_argument("--port", type=int, default=8080, help="the page's port (0: any free one)")
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path")
    audit_cli.add_parser(sub)
    release.add_parser(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
