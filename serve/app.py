"""The nrt HTTP service, for Ray Serve.

    serve run serve.app:app                                  # storage ./sweep-results, nrt-mini
    serve run serve.app:app storage=s3://bucket/nrt model=declare-lab/tango
    serve deploy serve/config.yaml                           # on a cluster

Every setting is also read from ``NRT_<NAME>`` (``NRT_STORAGE``, ``NRT_MODEL``,
``NRT_API_TOKEN``, …); see ``docs/serve.md``. The deployments live in :mod:`nrt.service`.
"""

from __future__ import annotations

from typing import Any

from nrt.service import ServiceSettings, build_app, start_local


def app(args: dict[str, Any] | None = None):
    """Serve's application builder: ``key=value`` arguments of ``serve run`` are settings."""
    settings = ServiceSettings.from_env(args)
    start_local(settings)
    return build_app(settings)
