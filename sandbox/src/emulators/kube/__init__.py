"""A Kubernetes API server emulator that the official client reaches over HTTP.

See `emulator.KubeEmulator` for the entry point and each module's docstring for what it
emulates and how faithfully.
"""

from emulators.kube.emulator import KubeEmulator
from emulators.kube.errors import ApiError
from emulators.kube.faults import Faults
from emulators.kube.resources import BUNDLED_CRDS
from emulators.kube.schemas import KUBERNETES_VERSION
from emulators.kube.server import WriteRecord

__all__ = [
    "BUNDLED_CRDS",
    "KUBERNETES_VERSION",
    "ApiError",
    "Faults",
    "KubeEmulator",
    "WriteRecord",
]
