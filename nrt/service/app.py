"""The application: the ingress and the editor deployments, sized by the settings.

``serve/app.py`` is the entry point (``serve run serve.app:app``, ``serve deploy
serve/config.yaml``); this module holds what Ray's workers import.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from ..runtime import connect
from .api import Ingress
from .editor import Editor
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

EditorDeployment = serve.deployment(name="Editor")(Editor)
IngressDeployment = serve.deployment(name="Ingress")(serve.ingress()(Ingress))


def editor_gpus(settings: ServiceSettings) -> float:
    """GPUs of an editor replica: the setting, or 1 where the cluster (or this machine) has any."""
    if settings.editor_gpus != "auto":
        return float(settings.editor_gpus)
    if settings.device == "cpu":
        return 0.0
    if ray.is_initialized():
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def build_app(settings: ServiceSettings) -> Application:
    """The ingress bound to the editor, each with its resources, queue and replica counts."""
    gpus = editor_gpus(settings)
    actor: dict[str, Any] = {"num_cpus": settings.editor_cpus}
    if gpus:
        actor["num_gpus"] = gpus
    if settings.max_replicas > settings.min_replicas:
        scaling: dict[str, Any] = {
            "autoscaling_config": {
                "min_replicas": settings.min_replicas,
                "max_replicas": settings.max_replicas,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 10,
                "downscale_delay_s": 300,
            }
        }
    else:
        scaling = {"num_replicas": settings.min_replicas}
    editor = EditorDeployment.options(
        ray_actor_options=actor,
        max_ongoing_requests=1,  # the adapter on the shared base UNet is global state
        max_queued_requests=settings.max_queued_requests,
        **scaling,
    ).bind(settings)
    logger.info("editor replicas: %s, %s CPU and %s GPU each", scaling, settings.editor_cpus, gpus)
    return IngressDeployment.options(
        ray_actor_options={"num_cpus": settings.ingress_cpus},
        max_ongoing_requests=settings.ingress_max_ongoing,
    ).bind(editor, settings)


def start_local(settings: ServiceSettings) -> bool:
    """Start (or join, with ``RAY_ADDRESS``) Ray and Serve's HTTP proxy on the settings' address,
    unless Ray runs in this process already. True when started here."""
    if ray.is_initialized():
        return False
    connect(log_to_driver=True)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    return True
