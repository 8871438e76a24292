"""Builds the Kubernetes API client: in-cluster config inside a pod, else the kubeconfig.

Only `bot/` loads configuration; routers receive the finished client through `KubeGateway`.
"""

from __future__ import annotations

import os

from kubernetes import client as k8s
from kubernetes import config as k8s_config


class ClusterConfigError(Exception):
    """Neither in-cluster credentials nor a usable kubeconfig were found."""


def load_api_client(*, context: str | None = None) -> k8s.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    try:
        return k8s_config.new_client_from_config(context=context)
    except (k8s_config.ConfigException, OSError) as error:
        where = os.environ.get("KUBECONFIG", "~/.kube/config")
        raise ClusterConfigError(
            f"cannot load the Kubernetes config ({where}"
            + (f", context {context}" if context else "")
            + f"): {error}"
        ) from error
