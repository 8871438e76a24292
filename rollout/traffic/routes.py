"""Which route of a routing object carries a service's traffic: the one the bot may split.

A VirtualService's `http` routes and an HTTPRoute's `rules` often hold more than one entry for
the same Service (an `/api` route with its own timeout beside a catch-all, a header-matched
route for testers). The bot changes exactly one of them and leaves every other entry as it was.
With one candidate there is nothing to choose; with several, the service's `route` key names it
(an entry's `name`, or its index), and without that key the start is refused with the list of
candidates, so the team decides rather than the bot guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rollout.traffic.workloads import RouterError


def entry_label(entry: dict[str, Any], index: int) -> str:
    """How an entry is named in messages and in `route:`: its name, else its index."""
    return str(entry.get("name") or index)


def choose_route(
    entries: Sequence[dict[str, Any]],
    *,
    reaches: Callable[[dict[str, Any]], bool],
    wanted: str | None,
    kind: str,
    owner: str,
    service: str,
    config_service: str,
) -> int:
    """The index of the entry to split. `kind` and `owner` name the entries and their object in
    messages (for example "http route" and "VirtualService shop/checkout")."""
    candidates = [i for i, entry in enumerate(entries) if reaches(entry)]
    listed = ", ".join(entry_label(entries[i], i) for i in candidates) or "none"
    if wanted is not None:
        for index, entry in enumerate(entries):
            if wanted in (entry.get("name"), str(index)):
                if index in candidates:
                    return index
                raise RouterError(
                    f"{kind} {wanted!r} of {owner} does not send traffic to Service {service} "
                    f"(those that do: {listed}); fix `route:` under services.{config_service}"
                )
        raise RouterError(
            f"{owner} has no {kind} {wanted!r} (those that reach Service {service}: "
            f"{listed}); fix `route:` under services.{config_service}"
        )
    if not candidates:
        raise RouterError(f"no {kind} of {owner} sends traffic to Service {service}")
    if len(candidates) > 1:
        raise RouterError(
            f"{len(candidates)} {kind}s of {owner} send traffic to Service {service} "
            f"({listed}); the bot splits exactly one: name it with `route:` under "
            f"services.{config_service} (a name, or the index of one without a name), then "
            "start again"
        )
    return candidates[0]
