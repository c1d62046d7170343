"""The service's settings: one dataclass, filled from ``serve run`` arguments, then ``NRT_*``
environment variables, then defaults; checked on construction.

``serve run serve.app:app storage=s3://bucket/nrt model=declare-lab/tango`` and
``NRT_STORAGE=s3://bucket/nrt NRT_MODEL=declare-lab/tango serve run serve.app:app`` are the same.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..defaults import DEFAULT_CLAP, model_defaults
from ..errors import InputError
from ..inputs import MAX_PROMPT, MAX_SECONDS

LOOPBACK_NAMES = ("localhost",)


@dataclass
class ServiceSettings:
    """Everything the service needs to start. Each field also reads ``NRT_<FIELD>``."""

    storage: str = field(
        default="sweep-results", metadata={"help": "storage root: local directory, s3:// or gs:// URI"}
    )
    model: str = field(default="mini", metadata={"help": "backbone: hub id, local directory or built-in name"})
    device: str = field(
        default="auto", metadata={"help": "where editor replicas run the model: auto, cpu, cuda, cuda:N"}
    )
    dtype: str = field(default="fp32", metadata={"help": "backbone precision: fp32, bf16, fp16"})
    clap: str | None = field(
        default=None,
        metadata={
            "help": f"CLAP model of `scores` (default: mini for the mini model, tiny for the toy models, else {DEFAULT_CLAP})"
        },
    )

    api_token: str | None = field(
        default=None, metadata={"help": "bearer token every endpoint but /healthz requires (none: open)"}
    )
    host: str | None = field(
        default=None, metadata={"help": "HTTP address (default 127.0.0.1; 0.0.0.0 when a token is set)"}
    )
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    allow_unauthenticated: bool = field(default=False, metadata={"help": "serve beyond loopback without a token"})

    max_upload_mb: float = field(default=50.0, metadata={"help": "largest audio upload, in MB (10^6 bytes)"})
    max_seconds: float = field(
        default=MAX_SECONDS, metadata={"help": "longest audio upload, in seconds (the CLI's --max-seconds)"}
    )
    max_prompt: int = field(default=MAX_PROMPT, metadata={"help": "longest target prompt, in characters"})

    max_queued_requests: int = field(default=32, metadata={"help": "edits queued per caller before new ones get 503"})
    max_clips_per_replica: int = field(default=4, metadata={"help": "bundles an editor replica keeps loaded (LRU)"})
    min_replicas: int = field(default=1, metadata={"help": "editor replicas at least"})
    max_replicas: int = field(default=1, metadata={"help": "editor replicas at most (autoscaling above min_replicas)"})
    editor_cpus: float = field(default=0.5, metadata={"help": "CPUs of an editor replica"})
    editor_gpus: str = field(
        default="auto", metadata={"help": "GPUs of an editor replica: auto (1 where the cluster has GPUs) or a number"}
    )
    ingress_cpus: float = field(default=0.1, metadata={"help": "CPUs of an ingress replica"})
    ingress_max_ongoing: int = field(default=256, metadata={"help": "requests one ingress replica handles at once"})

    max_jobs: int = field(default=8, metadata={"help": "uploads fitted at once; more get 503"})
    job_preset: str = field(
        default="auto",
        metadata={"help": "fit and search budget of uploads: auto (by model), mini, tiny, model or smoke"},
    )
    job_trials: int | None = field(
        default=None, metadata={"help": "search trials of an upload (default: the preset's)"}
    )
    job_fit_cpus: float = field(default=1.0, metadata={"help": "CPUs of an upload's fit task"})
    job_trial_cpus: float = field(default=1.0, metadata={"help": "CPUs of an upload's search trial"})
    job_trial_gpus: float = field(default=0.25, metadata={"help": "GPU fraction of an upload's search trial"})
    optuna_storage: str | None = field(
        default=None, metadata={"help": "SQLAlchemy URL of Optuna's studies (default: SQLite by the storage)"}
    )

    def __post_init__(self) -> None:
        if not self.storage:
            raise InputError("storage is empty: give a directory, s3://bucket/prefix or gs://bucket/prefix")
        if self.clap is None:
            self.clap = model_defaults(self.model).clap
        if self.api_token is not None and not self.api_token.strip():
            self.api_token = None
        if self.host is None:
            self.host = "0.0.0.0" if self.api_token else "127.0.0.1"
        if not 0 < self.port < 65536:
            raise InputError(f"port must lie in 1-65535, got {self.port}")
        if not self.api_token and not self.allow_unauthenticated and not is_loopback(self.host):
            raise InputError(
                f"host {self.host} is reachable from other machines, but no API token is set: set NRT_API_TOKEN, "
                "or NRT_ALLOW_UNAUTHENTICATED=1 to serve an open API on purpose"
            )
        for name in ("max_upload_mb", "max_seconds", "editor_cpus", "job_fit_cpus", "job_trial_cpus"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.ingress_cpus < 0:
            raise InputError(f"ingress_cpus must be >= 0, got {self.ingress_cpus}")
        for name in (
            "max_prompt",
            "max_clips_per_replica",
            "max_queued_requests",
            "min_replicas",
            "ingress_max_ongoing",
            "max_jobs",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_replicas < self.min_replicas:
            raise InputError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        if self.editor_gpus != "auto":
            try:
                if float(self.editor_gpus) < 0:
                    raise ValueError
            except ValueError:
                raise InputError(f"editor_gpus must be auto or a number >= 0, got {self.editor_gpus!r}") from None
        if self.job_preset not in ("auto", "mini", "tiny", "model", "smoke"):
            raise InputError(f"job_preset must be auto, mini, tiny, model or smoke, got {self.job_preset!r}")
        if self.job_trials is not None and self.job_trials < 1:
            raise InputError(f"job_trials must be >= 1, got {self.job_trials}")

    def __repr__(self) -> str:  # the token stays out of logs
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if shown["api_token"]:
            shown["api_token"] = "***"
        return f"ServiceSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @classmethod
    def from_env(
        cls, args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceSettings:
        """Settings from ``args`` (``serve run`` key=value pairs), else ``NRT_<NAME>``, else defaults."""
        args = dict(args or {})
        environ = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, spec in known.items():
            if name in args:
                raw = args[name]
            elif f"NRT_{name.upper()}" in environ:
                raw = environ[f"NRT_{name.upper()}"]
            else:
                continue
            values[name] = _convert(name, raw, spec.type)
        return cls(**values)


def _convert(name: str, raw: Any, kind: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    kind = str(kind)
    try:
        if kind.startswith("int"):
            return None if (text == "" and "None" in kind) else int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
    except ValueError:
        raise InputError(f"setting {name}: {raw!r} is not a valid {kind.split(' ')[0]}") from None
    return text or None if "None" in kind else text


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
