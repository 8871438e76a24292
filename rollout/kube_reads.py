"""A beat's cluster reads: one LIST per namespace and kind, shared by every rollout of the beat.

Before this, each rollout's tick read its own objects by name: at 1,000 rollouts about 2,000
sequential Deployment GETs a beat, plus the stable Service and a ReplicaSet LIST per pinned
rollout. Now `Engine.tick_all` opens one `BeatReads` and every tick of that beat observes the
cluster through it: the first read of a (namespace, kind) LISTs that collection (one bounded
call, see rollout/kube_call.py), and every later read of it in the beat is a dict look-up.
So a beat's reads grow with the namespaces and kinds in use, not with rollouts.
A beat starts the LISTs the previous beat needed at once, on threads of their own, so they
run while the beat waits for Prometheus (`prefetch`); their copies are then older by the
measurement's time (under a second), which a tick may see as it sees any change that lands
just after a read.

Why a LIST per beat and not a watch-fed cache (an informer, as Kubernetes controllers keep):
- the bot already works in beats, and what a tick must see is the cluster as it is at that
  beat; a LIST per beat gives exactly that, with no cache that can silently fall behind (a
  watch that stops delivering, a missed `410 Gone` and relist, a bookmark bug) and no
  long-lived connection per namespace and kind to keep alive, bound and restart;
- every call stays a bounded request/response call with one deadline, as for every other
  read; a LIST that fails fails the observations of that collection in this beat only (its
  error is kept, so the beat does not try again once per rollout), and the next beat LISTs
  anew, which is how a GET that failed behaved;
- the emulator, the RBAC and the failure tests stay request/response (`list` is granted, no
  `watch`). The cost: one LIST per (namespace, kind) a beat, whatever changed; at the sizes
  the README targets (5,000 rollouts) that is a few megabytes of JSON every analysis interval.
  And a LIST that hangs holds, for up to its one deadline, every tick of the beat that reads
  that namespace and kind, where a hanging GET held only its own rollout; rollouts of other
  namespaces, and writes, are not held by it.

What is shared, and what is read afresh:
- a tick's observing (traffic status, drift) and its actions (weights, promotion, rollback)
  read through the beat; starting a rollout reads by name, because it decides whether an
  object at a name it is about to create is its own;
- a write through the gateway marks the object in every open beat, and a later read of it in
  that beat is a GET: nobody reads back in a beat what it has just changed from the LIST;
- a write conditional on `resourceVersion` (read-modify-write of custom objects) that was
  computed from a beat's copy and conflicts starts again from a GET, so the beat's older copy
  can cost one retry, never an overwrite of a change made since;
- every read hands out its own copy (the JSON of the item is parsed per read), so a router that
  edits what it read cannot change what another rollout's tick sees.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class Collection:
    """What one LIST reads: one kind (`deployments`, `virtualservices.networking.istio.io`)
    in one namespace."""

    kind: str
    namespace: str


class _Listed:
    """One collection as the beat's LIST found it: each item's JSON by name, or the error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = False
        self.items: dict[str, str] = {}
        self.error: BaseException | None = None


class BeatReads:
    """The reads of one beat. Thread-safe: the beat's ticks run on a pool."""

    def __init__(self) -> None:
        self._lists: dict[Collection, _Listed] = {}
        self._released = False
        # How each collection was LISTed, for the next beat to start the same LISTs early.
        self._loaders: dict[Collection, Callable[[], list[JSON]]] = {}
        self._written: set[tuple[Collection, str]] = set()
        self._guard = threading.Lock()
        with _OPEN_GUARD:
            _OPEN.add(self)

    def read(
        self, where: Collection, name: str, *, list_all: Callable[[], list[JSON]]
    ) -> JSON | Stale | None:
        """The object as this beat's LIST found it (None: absent), or STALE when it was
        written during the beat (or the beat gave up its copies) and must be read by name."""
        with self._guard:
            if self._released or (where, name) in self._written:
                return STALE
        found = self._listed(where, list_all).get(name)
        return None if found is None else _own_copy(found)

    def items(self, where: Collection, *, list_all: Callable[[], list[JSON]]) -> list[JSON]:
        """Every object of the collection as this beat's LIST found it (copies)."""
        return [_own_copy(item) for item in self._listed(where, list_all).values()]

    def prefetch(self, previous: BeatReads | None) -> None:
        """Starts, each on a thread of its own, the LISTs that `previous` (the last beat)
        made, so they run while the beat measures (waiting for Prometheus) instead of after.
        A reader that comes first waits for the LIST under way; an error is kept as usual.
        `previous` gives up what it read first (its ticks are done): the beat then never
        holds two beats' copies of every object at once (tens of MB at 5,000 rollouts)."""
        if previous is None:
            return
        loaders = previous.loaders()
        previous.release()
        for where, list_all in loaders.items():
            thread = threading.Thread(
                target=self._quietly, args=(where, list_all), name="beat-list", daemon=True
            )
            thread.start()

    def loaders(self) -> dict[Collection, Callable[[], list[JSON]]]:
        with self._guard:
            return dict(self._loaders)

    def release(self) -> None:
        """Forget every object read: a tick still reading this beat (one whose calls hung)
        reads by name from now on."""
        with self._guard:
            self._lists = {}
            self._released = True

    def _quietly(self, where: Collection, list_all: Callable[[], list[JSON]]) -> None:
        with contextlib.suppress(Exception):  # kept in the collection and raised to readers
            self._listed(where, list_all)

    def forget(self, where: Collection, name: str) -> None:
        with self._guard:
            self._written.add((where, name))

    def _listed(self, where: Collection, list_all: Callable[[], list[JSON]]) -> dict[str, str]:
        with self._guard:
            listed = self._lists.setdefault(where, _Listed())
            self._loaders.setdefault(where, list_all)
        with listed.lock:  # the first reader LISTs; the others of the beat wait for it
            if not listed.loaded:
                try:
                    listed.items = {
                        str(item["metadata"]["name"]): json.dumps(item) for item in list_all()
                    }
                except Exception as error:
                    listed.error = error
                listed.loaded = True
        if listed.error is not None:
            raise listed.error
        return listed.items


class Stale:
    """The marker of an object written during the beat (read it by name)."""


STALE = Stale()
_CURRENT: ContextVar[BeatReads | None] = ContextVar("canary_bot_beat_reads", default=None)
# Every beat still referenced by a tick, so that a write from any thread marks them all.
_OPEN: weakref.WeakSet[BeatReads] = weakref.WeakSet()
_OPEN_GUARD = threading.Lock()


def current() -> BeatReads | None:
    """The beat the calling code observes through, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def observing(beat: BeatReads | None) -> Iterator[None]:
    """Reads in this block (this thread) go through `beat`; None: each read by name."""
    token = _CURRENT.set(beat)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def written(where: Collection, name: str) -> None:
    """A write of `name` was sent: no open beat hands out its LISTed copy any more."""
    with _OPEN_GUARD:
        beats = list(_OPEN)
    for beat in beats:
        beat.forget(where, name)


def _own_copy(serialized: str) -> JSON:
    item = json.loads(serialized)
    assert isinstance(item, dict)
    return item
