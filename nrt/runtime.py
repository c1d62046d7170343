"""Where work runs: Ray's connection, a worker's device and thread count, freeing GPU memory.

The sweep's tasks and the service's replicas share these; nothing here knows of either. Ray
is imported where it is used, so that the editor runs (and its tests run) where Ray is absent.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from .errors import NrtError

NAMESPACE = "nrt"

# Serve gives a new HTTP proxy 5 s to answer its first ready check, then kills it, and
# serve.start fails with the proxy's death. On a small or busy machine the proxy's worker
# process takes longer than that to start and import Serve; a local Ray started here gives it
# a minute (the environment's own value wins). The raylet and its workers inherit it.
PROXY_READY_ENV = ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")


def connect(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, log_to_driver: bool = False
) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``), or
    start a local Ray. True when Ray was started here, to be shut down when the work ends."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": log_to_driver, "namespace": NAMESPACE}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **common)
    else:
        os.environ.setdefault(*PROXY_READY_ENV)
        # "local" starts a fresh Ray instead of joining whatever /tmp/ray/ray_current_cluster names
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **common)
    return True


def worker_device(preference: str) -> str:
    """``cuda`` where this worker was given a GPU that torch can see, else ``cpu``."""
    import ray
    import torch

    if preference == "cpu":
        return "cpu"
    if torch.cuda.is_available() and ray.get_gpu_ids():
        return "cuda"
    if preference == "cuda":
        raise NrtError("the sweep asked for --device cuda, but this worker has no CUDA device")
    return "cpu"


def use_assigned_cpus() -> None:
    """One torch thread per CPU Ray gave this worker (more only fight over the same cores)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def free_accelerator() -> None:
    """Collect what is unreferenced and give the GPU memory it held back to the device."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
