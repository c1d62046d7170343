"""How a sweep shows where it is: a board that clip drivers post to, the clip's status file,
the trials plot, and the final table.

The board is a small actor the driver polls; the status file ``status/<clip_id>.json`` is
what stays in storage (queued, fitting, searching, done, failed) for anyone else to read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray import tune

from ..runtime import NAMESPACE
from ..storage import Storage
from .config import SEARCHED

logger = logging.getLogger(__name__)

STATES = ("queued", "fitting", "searching", "done", "failed")
TABLE_COLUMNS = (
    "clip_id",
    "status",
    *SEARCHED,
    "text",
    "audio",
    "sum",
    "trials",
    "trials_failed",
    "seconds",
    "bundle",
    "error",
)


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest state of every clip of a sweep, posted by the clip drivers."""

    def __init__(self) -> None:
        self._clips: dict[str, dict[str, Any]] = {}
        self._version = 0

    def post(self, clip_id: str, **fields: Any) -> None:
        if fields.get("state") == "queued":  # a new run of the clip starts from a clean line
            self._clips.pop(clip_id, None)
        self._clips.setdefault(clip_id, {}).update(fields)
        self._version += 1

    def trial_done(self, clip_id: str, failed: bool, metrics: dict[str, Any]) -> None:
        clip = self._clips.setdefault(clip_id, {})
        clip["trials_failed" if failed else "trials_done"] = (
            clip.get("trials_failed" if failed else "trials_done", 0) + 1
        )
        score = metrics.get("sum")
        if not failed and score is not None and score > clip.get("best_sum", float("-inf")):
            clip.update(best_sum=score, best_eta=metrics.get("eta"))
        self._version += 1

    def snapshot(self, since: int = -1) -> tuple[int, dict[str, dict[str, Any]]]:
        """The board, or nothing new when it has not changed since ``since``."""
        return self._version, ({} if since == self._version else {k: dict(v) for k, v in self._clips.items()})


def board_name(storage: Storage) -> str:
    """The board of every sweep on ``storage``: found by name, so a restored experiment reaches
    the board of the driver now running, not the one that was killed."""
    return "nrt-progress-" + hashlib.sha256(storage.root.encode()).hexdigest()[:12]


def open_board(storage: Storage) -> ray.actor.ActorHandle:
    return ProgressBoard.options(name=board_name(storage), namespace=NAMESPACE, get_if_exists=True).remote()  # type: ignore[attr-defined]  # a Ray actor class: .options comes with @ray.remote


def _board(name: str):
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def post(board: str, clip_id: str, **fields: Any) -> None:
    handle = _board(board)
    if handle is not None:
        handle.post.remote(clip_id, **fields)


class TrialProgress(tune.Callback):
    """Posts every finished or failed trial of one clip's experiment to the board."""

    def __init__(self, board: str, clip_id: str) -> None:
        self.board = board
        self.clip_id = clip_id

    def _post(self, trial, failed: bool) -> None:
        handle = _board(self.board)
        if handle is not None:
            metrics = {**trial.config, **(trial.last_result or {})}
            handle.trial_done.remote(self.clip_id, failed, {k: metrics.get(k) for k in ("sum", "eta")})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._post(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._post(trial, failed=True)


def write_status(storage: Storage, clip_id: str, state: str, **info: Any) -> None:
    storage.write_json(f"status/{clip_id}.json", {"clip_id": clip_id, "state": state, "time": time.time(), **info})


def describe(clip_id: str, state: dict[str, Any]) -> str:
    """One line of progress for a clip, from its board entry."""
    status = state.get("state", "queued")
    if status == "fitting":
        n = state.get("fits", 1)
        return f"{clip_id}: fitting {n} setting{'s' if n != 1 else ''}"
    if status == "searching":
        done, failed, total = state.get("trials_done", 0), state.get("trials_failed", 0), state.get("trials_total", 0)
        text = f"{clip_id}: searching, {done + failed}/{total} trials"
        if failed:
            text += f" ({failed} failed)"
        if "best_sum" in state:
            text += f", best sum {state['best_sum']:.3f} at η {state['best_eta']:.2f}"
        return text
    if status == "done":
        return f"{clip_id}: done in {state.get('seconds', 0):.1f} s, best sum {state.get('sum', float('nan')):.3f}"
    if status == "failed":
        return f"{clip_id}: FAILED: {state.get('error', '?')}"
    return f"{clip_id}: {status}"


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The final table: clip, status, best η, steps, guidance, start (with t_start where it has one),
    Text, Audio, Sum, trials, time."""
    header = ("clip", "status", "best η", "steps", "guid.", "start", "Text", "Audio", "Sum", "trials", "time")
    lines = []
    for row in rows:
        ok = row.get("status") in ("done", "earlier")
        trials = str(row.get("trials", "")) + (f" ({row['trials_failed']} failed)" if row.get("trials_failed") else "")
        lines.append(
            (
                row["clip_id"],
                row.get("status", ""),
                f"{row['eta']:.3f}" if ok else "-",
                str(row["steps"]) if ok else "-",
                f"{row['guidance']:.2f}" if ok else "-",
                describe_start(row) if ok else "-",
                f"{row['text']:.3f}" if ok else "-",
                f"{row['audio']:.3f}" if ok else "-",
                f"{row['sum']:.3f}" if ok else "-",
                trials,
                f"{row.get('seconds', 0):.1f} s",
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def describe_start(settings: dict[str, Any]) -> str:
    """``noise``, or ``input@0.60`` / ``inversion@0.60``: the start and the t_start it runs from;
    ``+keep10`` after it where the edit was merged with the recording at 10 dB."""
    start = settings.get("start") or "noise"
    text = start if start == "noise" else f"{start}@{float(settings['t_start']):.2f}"
    keep_db = float(settings.get("keep_db") or 0)
    return f"{text}+keep{keep_db:g}" if keep_db else text


def render_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buffer.getvalue()


def plot_trials(trials: Sequence[dict[str, Any]], title: str, note: str) -> bytes:
    """PNG of the trials: η against the CLAP sum, coloured by steps, one marker per fit setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.get("status") == "done"]
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        markers = "os^DvP*X"
        keys = sorted({t["fit_key"] for t in done})
        scatter = None
        for i, key in enumerate(keys):
            mine = [t for t in done if t["fit_key"] == key]
            scatter = axes.scatter(
                [t["eta"] for t in mine],
                [t["sum"] for t in mine],
                c=[t["steps"] for t in mine],
                marker=markers[i % len(markers)],
                cmap="viridis",
                label=key,
                edgecolors="k",
                linewidths=0.4,
            )
        if done:
            best = max(done, key=lambda t: t["sum"])
            axes.scatter(
                [best["eta"]],
                [best["sum"]],
                s=220,
                facecolors="none",
                edgecolors="crimson",
                linewidths=1.5,
                label=f"best: η {best['eta']:.2f}, sum {best['sum']:.3f}",
            )
        if scatter is not None:
            figure.colorbar(scatter, ax=axes, label="diffusion steps")
        axes.set_xlim(-0.02, 1.02)
        axes.ticklabel_format(axis="y", useOffset=False)
        axes.set_xlabel("η")
        axes.set_ylabel("CLAP sum (text + audio)")
        axes.set_title(title, fontsize=9)
        axes.legend(fontsize=7, loc="best")
        figure.text(0.01, 0.01, note, fontsize=6, color="0.4")
        figure.tight_layout(rect=(0, 0.04, 1, 1))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
