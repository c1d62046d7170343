"""The HTTP service: a FastAPI ingress in front of editor replicas that multiplex the registry's
bundles on one base model each, and uploads fitted and searched in the background by the sweep.

``serve run serve.app:app`` starts it; :func:`build_app` is the same from Python.
"""

from .settings import ServiceSettings

__all__ = ["ServiceSettings", "build_app", "start_local"]


def __getattr__(name: str):
    # Ray Serve is an optional dependency: import it only when the app is built
    if name in ("build_app", "start_local"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
