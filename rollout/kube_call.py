"""One Kubernetes API call with ONE deadline, retries included.

The issue this fixes: a `read_deployment` against an API server that accepted the connection
but never answered took 242 s, because tenacity's six attempts stacked on urllib3's own three
retries, each with a 10 s read timeout. Here tenacity is the only retry layer (`bot/kube.py`
turns urllib3's off): it stops before a back-off would cross the deadline, and each attempt's
socket timeout shrinks to the time left. A call past its deadline raises
`KubeDeadlineExceeded`, a fault like any other: the caller's next tick tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
DEFAULT_REQUEST_TIMEOUT = 10.0
# Opening a connection never gets more than this share of the budget.
CONNECT_TIMEOUT = 3.0
MAX_ATTEMPTS = 6
# A cap on one attempt's read timeout (None: the whole remaining budget). Tests lower it to make
# a held-back answer a client timeout that is retried within the same deadline.
ATTEMPT_TIMEOUT: float | None = None
# What a request callable receives: the (connect, read) socket timeouts of this attempt.
Timeouts = tuple[float, float]


class KubeUnavailable(Exception):
    """The API server did not accept a request within the call's deadline."""


class KubeDeadlineExceeded(KubeUnavailable, TimeoutError):
    """The call's one deadline passed (retries included) without a usable answer."""


def transient(error: BaseException) -> bool:
    """Worth another attempt: a retryable status, a dropped connection, a socket timeout."""
    if isinstance(error, ApiException):
        if error.status == 409 and "AlreadyExists" in str(error.body):
            return False  # a create that already happened: final, and callers treat it as done
        if error.status == 409 and "Precondition failed" in str(error.body):
            return False  # the object is no longer the one we meant: final, never retried
        return error.status in RETRIED_STATUSES or error.status == 0
    if isinstance(error, KubeDeadlineExceeded):
        return False
    return isinstance(error, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


class KubeConflict(Exception):
    """409 Conflict: the object changed since it was read (a write carrying an older
    `resourceVersion`). The gateway's own type, so routers never handle `ApiException`: the
    caller reads again and decides afresh."""


def is_conflict(error: ApiException) -> bool:
    """A conflict with a concurrent writer; not AlreadyExists on create or a failed uid
    precondition on delete, which the create and delete calls settle themselves."""
    body = str(error.body)
    return error.status == 409 and "AlreadyExists" not in body and "Precondition failed" not in body


class BoundedCall:
    def __init__(
        self,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        on_call: Callable[[str, str], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        self._on_call = on_call or (lambda verb, what: None)
        self._on_deadline = on_deadline or (lambda what: None)

    def __call__(self, verb: str, what: str, request: Callable[[Timeouts], Any]) -> Any:
        """One call with one deadline: attempts and back-off together stay within it."""
        budget = self.request_timeout
        deadline = time.monotonic() + budget

        def attempt() -> Any:
            left = deadline - time.monotonic()
            if left <= 0.01:
                raise KubeDeadlineExceeded(f"{verb} {what}: no answer within {budget:g}s")
            self._on_call(verb, what)
            read = left if ATTEMPT_TIMEOUT is None else min(ATTEMPT_TIMEOUT, left)
            return request((min(CONNECT_TIMEOUT, left), read))

        retrying = Retrying(
            retry=retry_if_exception(transient),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            stop=stop_before_delay(budget) | stop_after_attempt(MAX_ATTEMPTS),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except ApiException as error:
            if is_conflict(error):
                raise KubeConflict(f"{verb} {what}: {error.reason or 'Conflict'}") from error
            raise
        except Exception as error:
            if time.monotonic() >= deadline - 0.05 or isinstance(error, KubeDeadlineExceeded):
                self._on_deadline(f"{verb} {what}")
                log.warning("%s %s: deadline of %gs exceeded (%s)", verb, what, budget, error)
                raise KubeDeadlineExceeded(
                    f"{verb} {what}: no answer within {budget:g}s ({error})"
                ) from error
            if transient(error):
                raise KubeUnavailable(f"{verb} {what}: {error}") from error
            raise
