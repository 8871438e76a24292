"""The metrics backend behind one small protocol: run an instant query, get labelled numbers.

A provider knows nothing of rollouts, rules or templates (those live in `queries.py` and
`judge.py`), so a test or another backend only has to answer PromQL. `PrometheusProvider` wraps
`prometheus_api_client` and turns every way a query can go wrong into `MetricsUnavailable`,
because for the bot an unreachable or failing Prometheus simply means "no data".

Queries are POSTed as a form, which the Prometheus API takes at `/api/v1/query` exactly like
a GET. `prometheus_api_client` puts the query in the URL, and a batched query names every
rollout: about 50 KB of URL at 1,000 rollouts, 250 KB at 5,000, where proxies in front of
Prometheus commonly refuse a request line over 8 KB (nginx's default: 414). The client takes
the `requests.Session` it sends through (its documented way to configure HTTP), so the session
below turns its query GET into the same request as a form POST; the client still builds the
request, checks the status and reads the answer.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from rollout.analysis.types import finite

log = logging.getLogger(__name__)

QUERY_PATH = "/api/v1/query"


@dataclass(frozen=True)
class Series:
    """One result series: its labels and its value (None for NaN/Inf: no usable data)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", finite(self.value))


class MetricsUnavailable(Exception):
    """The backend could not be reached, or could not answer: treat every value as no data."""


class QueryFailed(MetricsUnavailable):
    """The backend answered this one query with an error (bad PromQL, overload).

    Other queries of the same tick may still work, unlike when the backend is unreachable.
    """


class MetricsProvider(Protocol):
    def query(self, promql: str) -> list[Series]:
        """Run an instant query; raise `MetricsUnavailable` if it cannot be answered."""
        ...


@dataclass(frozen=True, kw_only=True)
class PrometheusAccess:
    """How to reach Prometheus safely: which certificates to trust and which credentials to send.

    `verify` is True (the system's CAs), a path to a CA bundle, or False, which only an
    explicit `insecure_skip_verify: true` in the config produces. The secrets are values, not
    variable names: `bot/` reads the environment, the domain never does.
    """

    verify: bool | str = True
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else {}


class PrometheusProvider:
    """`MetricsProvider` over the Prometheus HTTP API (`/api/v1/query`)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: timedelta = timedelta(seconds=5),
        access: PrometheusAccess | None = None,
    ) -> None:
        access = access or PrometheusAccess()
        # No retries at all: the timeout is the query's one deadline (DESIGN.md "Bounded
        # calls"), and a query that failed is simply asked again at the next analysis tick.
        retry = Retry(total=0, backoff_factor=0, status_forcelist=())
        # The client only knows "verify or not"; a CA bundle goes in through its session.
        session = FormQuerySession()
        session.verify = access.verify
        credentials: dict[str, Any] = {"headers": access.headers()}
        if access.basic_auth is not None:
            credentials["auth"] = access.basic_auth
        self._client = PrometheusConnect(
            url,
            session=session,
            **credentials,
            retry=retry,
            # The client types its timeout as whole seconds.
            timeout=max(1, math.ceil(timeout.total_seconds())),
        )
        self.url = url
        self.queries_issued = 0
        self._counting = threading.Lock()

    def query(self, promql: str) -> list[Series]:
        with self._counting:  # a tick's queries run side by side (rollout/analysis/measure.py)
            self.queries_issued += 1
        try:
            result = self._client.custom_query(promql)
        except PrometheusApiClientException as error:
            raise QueryFailed(f"Prometheus refused the query: {error}") from error
        except (requests.RequestException, ValueError, KeyError) as error:
            # ValueError/KeyError: a body that is not Prometheus's JSON (a proxy's error page).
            raise MetricsUnavailable(f"Prometheus at {self.url} unreachable: {error}") from error
        return parse_result(result)


class FormQuerySession(requests.Session):
    """A session that sends an instant query's parameters as a POSTed form, not in the URL."""

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.endswith(QUERY_PATH):
            return self.post(url, data=kwargs.pop("params", None), **kwargs)
        return super().get(url, **kwargs)


def parse_result(result: Any) -> list[Series]:
    """The `data.result` of an instant query: a vector (list of series) or a scalar."""
    if not isinstance(result, list):
        raise QueryFailed(f"unexpected Prometheus result: {result!r:.200}")
    if len(result) == 2 and not isinstance(result[0], dict):
        # A scalar result (`scalar(...)`, `vector` arithmetic on numbers): [time, "value"].
        return [Series({}, _number(result[1]))]
    # A JSON object's keys are strings already, and so are Prometheus's label values: the
    # labels are kept as decoded (a tick decodes 12,000 series at 1,000 rollouts).
    return [
        Series(labels=item.get("metric") or {}, value=_number(item.get("value", (None, None))[1]))
        for item in result
    ]


def _number(text: Any) -> float | None:
    try:
        return finite(float(text))
    except (TypeError, ValueError):
        return None
