"""The thread every controller of the emulator runs on (`ControllerThread`: jobs.py too), and
the event loop the Deployment and Argo Rollout controllers share (`ReconcileLoop`: controller.py,
argo_controller.py), which reconciles the objects marked dirty.

It is event-driven so that thousands of objects cost nothing at rest: the store's listener
(`_on_change`, called with the store lock held) only marks an object dirty, and a timer heap
marks it again when something about it falls due (a Pod becoming ready, a step's delay, a
deadline). Each object is reconciled under the store lock; what the controller writes there
does not mark it dirty again (`_writing`). An object that cannot be reconciled (one that only
`validate=False` lets in) is logged and the loop goes on.
"""

from __future__ import annotations

import heapq
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from emulators.kube.objects import ObjectStore
from emulators.kube.resources import ResourceKind

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Key = tuple[str, str]
STOP_JOIN_TIMEOUT = 5.0


class ControllerThread(ABC):
    """A daemon thread running `_run` until `stop`: `_run` waits on `_cond` and returns once
    `_stopping` is set (both under `_cond`)."""

    def __init__(self, *, name: str) -> None:
        self._name = name  # the thread's
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _run(self) -> None: ...

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_TIMEOUT)
            self._thread = None


class ReconcileLoop(ControllerThread):
    def __init__(
        self, store: ObjectStore, *, clock: Callable[[], float], name: str, kind_name: str
    ) -> None:
        super().__init__(name=name)
        self.store = store
        self.clock = clock
        self._kind_name = kind_name  # for the log line of an object that cannot be reconciled
        self._dirty: set[Key] = set()
        self._timers: list[tuple[float, Key]] = []
        self._writing = False
        # Each controller adds `_on_change` to `store.listeners` once it is fully built.

    @abstractmethod
    def _on_change(self, rk: ResourceKind, old: JSON | None, new: JSON | None) -> None:
        """Store listener (the store lock is held): only takes note of what to reconcile."""

    @abstractmethod
    def _reconcile(self, key: Key) -> None:
        """Bring the object `key` (namespace, name) to where it should be now."""

    def _taking(self) -> None:
        """Called with the condition held as a batch of keys is taken: a controller copies
        here what its reconciling reads that other threads change (by default nothing)."""
        return None

    def _mark(self, key: Key) -> None:
        """Reconcile `key` soon (the condition must be held)."""
        self._dirty.add(key)
        self._cond.notify_all()

    def _at(self, when: float, key: Key) -> None:
        """Reconcile `key` again at `when` (on `clock`)."""
        with self._cond:
            heapq.heappush(self._timers, (when, key))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self.clock()
                    while self._timers and self._timers[0][0] <= now:
                        self._dirty.add(heapq.heappop(self._timers)[1])
                    if self._dirty:
                        break
                    wait = self._timers[0][0] - now if self._timers else None
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                keys, self._dirty = sorted(self._dirty), set()
                self._taking()
            for key in keys:
                with self.store.lock:
                    self._writing = True
                    try:
                        self._reconcile(key)
                    except Exception:  # an object only validate=False lets in; keep going
                        log.exception(
                            "kube emulator: cannot reconcile %s %s/%s", self._kind_name, *key
                        )
                    finally:
                        self._writing = False
