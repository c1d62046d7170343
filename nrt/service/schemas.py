"""What goes over the wire: request and response bodies, with the ranges the OpenAPI page shows.

The edit fields are the names the CLI and the sweep use (``eta``, ``steps``, ``guidance``,
``scheduler``, ``start``, ``t_start``, ``keep_db``, ``seed``); their ranges are those of :class:`~nrt.sample.SampleConfig`,
:func:`~nrt.edit.check_etas` and :func:`~nrt.sample.check_seed`, which the editor checks again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..inputs import EDIT_TYPES
from ..settings import MAX_SEED, STARTS

EditType = Literal[EDIT_TYPES]  # type: ignore[valid-type]
Start = Literal[STARTS]  # type: ignore[valid-type]
EDIT_TYPE_WORDS = f"{', '.join(EDIT_TYPES[:-1])} or {EDIT_TYPES[-1]}"  # "addition, style_transfer or inpainting"
JobState = Literal["queued", "fitting", "searching", "done", "failed"]


NOT_BLANK = r"[^\s\x1c-\x1f\x85]"
"""A text that ``str.strip`` leaves something of: a character that is not whitespace. U+001C-U+001F
and U+0085 are named because Python strips them and ECMA-262's ``\\s`` does not match them."""

FLAC_FLOAT: dict[str, Any] = {
    "required": ["format", "subtype"],
    "properties": {"format": {"const": "flac"}, "subtype": {"const": "FLOAT"}},
}
"""The one combination of fields :class:`EditRequest` refuses: flac holds no float samples."""


class ErrorBody(BaseModel):
    """Every error: a short code to branch on and a sentence that says what to change."""

    error: str = Field(
        description="short code: invalid_request, bad_request, bad_audio, unauthorized, not_found, "
        "method_not_allowed, conflict, too_large, overloaded, internal"
    )
    detail: str = Field(description="what was wrong, with the bad value and the accepted range")


class EditRequest(BaseModel):
    """One edit of a registered clip. Every field is optional: an absent one takes the clip's best."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"eta": 0.6, "seed": 7}], "not": FLAC_FLOAT}
    )

    eta: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="η in [0, 1]: 0 reconstructs the input, 1 follows the prompt alone",
    )
    steps: int | None = Field(
        None, ge=1, le=1000, strict=True, description="diffusion steps T, 1-1000, written as an integer (3, not 3.0)"
    )
    guidance: float | None = Field(
        None, ge=0.0, le=20.0, strict=True, description="classifier-free guidance scale, 0-20"
    )
    scheduler: Literal["ddpm", "ddim"] | None = Field(None, description="sampler")
    start: Start | None = Field(
        None,
        description="where step 3 starts: noise (pure noise, the paper's), input (the input noised to "
        "t_start) or inversion (the input's DDPM inversion by the fitted UNet, regenerated from t_start)",
    )
    t_start: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        strict=True,
        description="fraction of the sampling schedule run from the input, in (0, 1]: 1 starts at its "
        "noisiest step; the noise start ignores it",
    )
    keep_db: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        strict=True,
        description="keep the recording wherever the edit's spectrum is within about this many dB of the "
        "codec's round trip of the input (0: off, the edit as decoded); unchanged parts come back as recorded",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        strict=True,
        description="seed of every random draw of the edit, 0 to 2^32-1, written as an integer; "
        "the same seed and settings give the same audio",
    )
    format: Literal["wav", "flac"] = Field("wav", description="container of the returned audio")
    subtype: Literal["PCM_16", "PCM_24", "FLOAT"] = Field(
        "PCM_16", description="sample format: 16- or 24-bit PCM, or 32-bit float (wav only)"
    )
    scores: bool = Field(
        False,
        strict=True,
        description="also score the edit with CLAP against the prompt and the input "
        "(X-Nrt-Clap-* headers); costs a CLAP pass",
    )

    @model_validator(mode="after")
    def _flac_is_pcm(self) -> EditRequest:
        if self.format == "flac" and self.subtype == "FLOAT":
            raise ValueError("flac holds PCM_16 or PCM_24 samples, not FLOAT: ask for wav")
        return self


class Settings(BaseModel):
    """The settings of an edit."""

    eta: float = Field(description="η in [0, 1]")
    steps: int = Field(description="diffusion steps")
    guidance: float = Field(description="classifier-free guidance scale")
    scheduler: str = Field(description="sampler: ddpm or ddim")
    start: Start = Field(description="where step 3 starts: noise, input or inversion")
    t_start: float = Field(description="fraction of the schedule run from the input (ignored by the noise start)")
    keep_db: float = Field(0.0, description="merge with the recording, in dB (0: off)")
    seed: int = Field(description="seed of the edit's random draws")


class Scores(BaseModel):
    """CLAP scores of the best trial: text (edit vs prompt), audio (edit vs input), their sum."""

    model_config = ConfigDict(extra="allow")

    text: float = Field(description="cosine of the edit's and the prompt's CLAP embeddings")
    audio: float = Field(description="cosine of the edit's and the input's CLAP embeddings")
    sum: float = Field(description="text + audio, what the search maximised")
    clap: str | None = Field(None, description="the CLAP model that gave them")


class ClipSummary(BaseModel):
    """A clip the registry holds, with the best settings its search found."""

    clip_id: str = Field(description="the clip's id")
    edit_type: str = Field(description=EDIT_TYPE_WORDS)
    target_prompt: str = Field(description="what the edit should sound like")
    model: str = Field(description="the backbone its bundle was fitted on")
    best: Settings = Field(description="the settings of the best trial: what an edit uses by default")
    scores: Scores = Field(description="the best trial's scores")
    trials: dict[str, int] = Field(description="trials run, done and failed")
    created: str | None = Field(None, description="when the registry entry was written (UTC, ISO 8601)")


class ClipDetail(ClipSummary):
    """One clip in full: its mask, fit settings and search space."""

    mask: list[list[float]] | None = Field(None, description="inpainting ranges in seconds")
    fit: dict[str, Any] = Field(default_factory=dict, description="fit settings of the best bundle")
    search: dict[str, str] = Field(default_factory=dict, description="the search space, per parameter")
    seconds: float | None = Field(None, description="time the fit and search took")
    clap_note: str = Field(description="what the scores can be compared with")
    links: dict[str, str] = Field(description="the clip's input and edits endpoints")


class ClipList(BaseModel):
    clips: list[ClipSummary] = Field(description="every clip of the registry, by clip id")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="ok while the ingress answers")
    version: str = Field(description="nrt's version")
    model: str = Field(description="the backbone the editors run")


class JobCreated(BaseModel):
    """An upload accepted: its fit and search run in the background."""

    clip_id: str = Field(description="the clip's id, under which it becomes editable")
    job_id: str = Field(description="for GET /v1/jobs/{job_id}")


class JobProgress(BaseModel):
    fits: int | None = Field(None, description="fit settings being fitted")
    trials_done: int = Field(0, description="search trials finished")
    trials_failed: int = Field(0, description="search trials that failed")
    trials_total: int | None = Field(None, description="search trials in all")
    fraction: float = Field(0.0, description="share of the search's trials finished, 0-1 (1 when done)")
    best_sum: float | None = Field(None, description="best CLAP sum so far")


class JobStatus(BaseModel):
    """Where an upload's fit and search are."""

    job_id: str = Field(description="the job's id")
    clip_id: str = Field(description="the clip it fits")
    state: JobState = Field(description="queued, fitting, searching, done or failed")
    progress: JobProgress = Field(description="how far the search is")
    created: float = Field(description="Unix time the upload was accepted")
    updated: float | None = Field(None, description="Unix time of the last change of state")
    error: str | None = Field(None, description="why it failed (state failed)")
    links: dict[str, str] = Field(default_factory=dict, description="the job, and once done the clip and its edits")
