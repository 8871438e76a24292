"""What every call of the gateway (rollout/kube.py) shares: the clients, one bounded call, and
the conventions that make each call safe to repeat.

Absent is None on a read, AlreadyExists on a create and NotFound on a delete are success. A
read made while a beat observes (rollout/kube_reads.py) is served from the beat's one LIST of
that namespace and kind; every write marks its object in the open beats first, so nothing in a
beat reads back from its LIST what was just changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rollout import kube_reads
from rollout.kube_call import DEFAULT_REQUEST_TIMEOUT, BoundedCall, Timeouts
from rollout.kube_reads import Collection

log = logging.getLogger("rollout.kube")  # one logger name for every gateway call (bot/metrics.py)

MANAGED_BY = {"app.kubernetes.io/managed-by": "canary-bot"}
# Items per page of a LIST (each page one bounded call). None: a beat reads a namespace's kind
# with exactly one request, however many objects it holds (an API server answers an unpaged
# LIST from its watch cache); the loop below still follows a `continue` a server sends.
PAGE_SIZE: int | None = None
JSON = dict[str, Any]
# A LIST request: (socket timeouts, continue token or None) -> the client's raw response.
ListRequest = Callable[[Timeouts, str | None], Any]


class GatewayBase:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        on_call: Callable[[str, str], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._networking = k8s.NetworkingV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._call = BoundedCall(
            request_timeout=request_timeout, on_call=on_call, on_deadline=on_deadline
        )

    def _observed(
        self,
        where: Collection,
        name: str,
        *,
        what: str,
        get: Callable[[Timeouts], Any],
        list_page: ListRequest,
    ) -> JSON | None:
        """A read by name: from the beat's LIST of `where` while a beat observes, else a GET."""
        beat = kube_reads.current()
        if beat is not None:
            found = beat.read(where, name, list_all=lambda: self._list_all(where, list_page))
            if not isinstance(found, kube_reads.Stale):
                return found
        return self._read_or_none(what, get)

    def _list_all(self, where: Collection, list_page: ListRequest) -> list[JSON]:
        """Every item of a collection, page by page if the server pages (each page one bounded
        call)."""
        items: list[JSON] = []
        token: str | None = None
        while True:
            page = json_of(
                self._call(
                    "list", f"{where.kind} {where.namespace}", partial(_page, list_page, token)
                )
            )
            items += [item for item in page.get("items") or [] if isinstance(item, dict)]
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    @staticmethod
    def _writing(where: Collection, name: str) -> None:
        """Called before every write: the open beats read `name` by name from now on."""
        kube_reads.written(where, name)

    def _read_or_none(self, what: str, request: Callable[[Timeouts], Any]) -> JSON | None:
        try:
            response = self._call("get", what, request)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json_of(response)

    def _create_unless_exists(self, what: str, request: Callable[[Timeouts], Any]) -> None:
        try:
            self._call("create", what, request)
        except ApiException as error:
            if error.status != 409 or "AlreadyExists" not in str(error.body):
                raise

    def _delete_unless_gone(self, what: str, request: Callable[[Timeouts], Any]) -> None:
        """Deletes; an object already gone is success, and so is a uid precondition that no
        longer holds: the object the bot created is gone, and the one now at that name is
        somebody else's, which the bot must not delete."""
        try:
            self._call("delete", what, request)
        except ApiException as error:
            if error.status == 409 and "Precondition failed" in str(error.body):
                log.warning(
                    "not deleting %s: it was replaced by an object canary-bot did not create", what
                )
                return
            if error.status != 404:
                raise


def _page(list_page: ListRequest, token: str | None, timeout: Timeouts) -> Any:
    return list_page(timeout, token)


def only_if(uid: str | None) -> k8s.V1DeleteOptions | None:
    """Delete options that make the API server refuse unless the object still has `uid`."""
    if uid is None:
        return None
    return k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid))


def json_of(response: Any) -> JSON:
    data = json.loads(response.data)
    assert isinstance(data, dict)
    return data
