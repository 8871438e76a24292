"""What every test of the Kubernetes emulator (`test_kube_*.py`) stands on.

One emulator per module, with every bundled CRD; a real client per test, which finds the
faults off and the write log empty; and a namespace of its own, so tests in a module never see
each other's objects. A module that needs pods to take longer to become ready sets
`READY_DELAY` (seconds) at its top.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from kubernetes import client

from emulators.kube import BUNDLED_CRDS, KubeEmulator

READY_DELAY = 0.05
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest) -> Iterator[KubeEmulator]:
    delay = getattr(request.module, "READY_DELAY", READY_DELAY)
    with KubeEmulator(crd_dir=BUNDLED_CRDS, ready_delay=delay) as emulator:
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    """The official client, configured from a kubeconfig as the bot's is."""
    kube.faults.reset()
    kube.clear_writes()
    api_client = kube.api_client()
    yield api_client
    kube.faults.reset()
    api_client.close()


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A fresh namespace name, prefixed with the module's subject (`crud-3`, `patch-7`)."""
    return f"{request.module.__name__.rsplit('_', 1)[-1]}-{next(_namespaces)}"
