"""What a sweep says when work fails, and when it stops retrying.

A trial that raises is retried (``max_retries``); but an error or crash that every trial of a
clip meets (a broken bundle, a worker that dies at the same line) is not mended by retrying,
and each retry costs a whole edit. :class:`CrashGuard` stops such an experiment once its first
attempts have all failed, and :func:`describe_error` turns the failure into one line: the error
raised, or, for a worker that died, how it died and the log to read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ray
from ray import tune

from .config import METRIC

LOGS_HINT = "the Ray logs folder of that node (/tmp/ray/session_latest/logs by default)"


class CrashGuard(tune.Callback):
    """Counts the failed attempts of one experiment's trials; tripped when ``limit`` attempts
    failed and no trial finished. Keeps the first failure, to say why."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures = 0
        self.finished = 0
        self._failed_trials: list = []  # Tune's trials, in the order of their failures

    @property
    def tripped(self) -> bool:
        return self.finished == 0 and self.failures >= self.limit

    @property
    def first_error(self) -> BaseException | None:
        """The error of the earliest failure that has one. Read when the experiment is over: a
        worker that dies at once can be reported failed before Tune has stored its error."""
        for trial in self._failed_trials:
            error = trial.get_pickled_error() or trial.get_error()
            if error is not None:
                return error
        return None

    def _failed(self, trial) -> None:
        self.failures += 1
        if trial not in self._failed_trials:
            self._failed_trials.append(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if trial.last_result and METRIC in trial.last_result:
            self.finished += 1

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._failed(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._failed(trial)


class StopWhenTripped(tune.Stopper):
    """Tune's stopper for a :class:`CrashGuard`: stops every trial once the guard trips."""

    def __init__(self, guard: CrashGuard) -> None:
        self.guard = guard

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.guard.tripped


class TrialsCrashed(Exception):
    """Every attempted trial of an experiment failed and none finished."""

    @classmethod
    def from_guard(cls, guard: CrashGuard) -> TrialsCrashed:
        cause = describe_error(guard.first_error) if guard.first_error is not None else "no error recorded"
        return cls(
            f"the first {guard.failures} trial attempts failed and none finished, so the search was "
            f"stopped rather than retried; the first failure: {cause}"
        )


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong: the error a task raised, or which worker died, how,
    and the log that tells more."""
    text = str(exc)
    if isinstance(exc, ray.exceptions.RayActorError) or "worker process has died" in text:
        return _worker_death(type(exc).__name__, text)
    cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the error that was raised
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:1000]


def _worker_death(kind: str, text: str) -> str:
    pid, ip = re.search(r"\bpid: (\d+)", text), re.search(r"\bip: ([0-9A-Fa-f.:]+)", text)
    if pid is None:
        return f"{kind}: a worker process died (a crash or the out-of-memory killer); read worker-*.err in {LOGS_HINT}"
    where = f"pid {pid[1]}" + (f" on {ip[1]}" if ip else "")
    log = worker_log(int(pid[1]))
    if log is None:
        return (
            f"{kind}: the worker process ({where}) died: a crash (SIGSEGV, abort) or the out-of-memory "
            f"killer; read worker-*-{pid[1]}.err in {LOGS_HINT}"
        )
    return f"{kind}: the worker process ({where}) died: {crash_summary(log)}; its log: {log}"


def worker_log(pid: int) -> Path | None:
    """The stderr log of Ray worker ``pid``, where this process can read it: this process is a
    Ray worker too, and its own stderr is a file in the same logs folder."""
    try:
        logs = Path(os.readlink("/proc/self/fd/2")).parent
    except OSError:
        return None
    found = sorted(logs.glob(f"worker-*-{pid}.err")) if logs.is_dir() else []
    return found[0] if found else None


def crash_summary(log: Path, tail_bytes: int = 64_000) -> str:
    """How a worker ended, from the tail of its log: the fatal signal or error, and the
    innermost Python frame it was in."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "a crash or the out-of-memory killer (its log could not be read)"
    fatal_at = max((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error:")), default=None)
    fatal = lines[fatal_at].strip() if fatal_at is not None else None
    signal = next((m[1] for ln in reversed(lines) if (m := re.search(r"\*\*\* (SIG[A-Z]+) received", ln))), None)
    frame = None
    if fatal_at is not None:  # the crashing thread's stack follows the fatal error, innermost frame first
        stack = lines[fatal_at + 1 :]
        start = next((i for i, ln in enumerate(stack) if ln.startswith(("Stack (", "Current thread"))), None)
        if start is not None:
            frames = [ln.strip() for ln in stack[start + 1 :] if ln.startswith("  File ")]
            own = next((f for f in frames if f"{os.sep}nrt{os.sep}" in f), None)  # where nrt called it
            frame = " called from ".join(dict.fromkeys(f for f in (frames[0] if frames else None, own) if f)) or None
    what = fatal or (f"{signal} received" if signal else "it ended without a Python error (the out-of-memory killer?)")
    return f"{what}{f', in {frame}' if frame else ''}"


__all__ = ["CrashGuard", "StopWhenTripped", "TrialsCrashed", "crash_summary", "describe_error", "worker_log"]
