"""Builds the Kubernetes API client: in-cluster config inside a pod, else the kubeconfig.

Only `bot/` loads configuration; routers receive the finished client through `KubeGateway`.
Every client the bot uses goes through `without_retries`: `KubeGateway` is the one retry layer
and owns the call's deadline, so urllib3 must not retry underneath it.
"""

from __future__ import annotations

import os

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import rest
from urllib3.util.retry import Retry


class ClusterConfigError(Exception):
    """Neither in-cluster credentials nor a usable kubeconfig were found."""


def load_api_client(*, context: str | None = None) -> k8s.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return without_retries(k8s.ApiClient(configuration))
    try:
        return without_retries(k8s_config.new_client_from_config(context=context))
    except (k8s_config.ConfigException, OSError) as error:
        where = os.environ.get("KUBECONFIG", "~/.kube/config")
        raise ClusterConfigError(
            f"cannot load the Kubernetes config ({where}"
            + (f", context {context}" if context else "")
            + f"): {error}"
        ) from error


def without_retries(api_client: k8s.ApiClient) -> k8s.ApiClient:
    """The same client with urllib3's own retries off (by default it retries 3 times, each
    with the full socket timeout, under whatever retries the caller does)."""
    configuration = api_client.configuration
    configuration.retries = Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0)
    api_client.rest_client = rest.RESTClientObject(configuration)
    return api_client
