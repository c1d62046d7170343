"""The ingress: the HTTP API of DESIGN.md, on FastAPI, in front of the editor deployment.

Every answer that is not audio is JSON; every error is ``{"error": code, "detail": sentence}``
with 400 (not audio, malformed body), 401 (token), 404, 409 (clip id taken, bundle of another
model), 413 (upload too large), 422 (a value out of range or of the wrong type) or 503 (queue
full). The registry is read on every request, so a clip the sweep adds is served at once.
"""

import hmac
import logging
import math
from collections.abc import Callable
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from .. import __version__
from ..clap_notes import describe_clap
from ..defaults import DEFAULT_CLAP
from ..errors import InputError
from ..manifest import CLIP_ID_PATTERN, MAX_CLIP_ID, validate_clip_id
from ..runtime import NAMESPACE
from ..storage import Storage, list_registry, read_registry_entry
from ..sweep.config import complete_settings
from .editor import EditJob
from .errors import (
    ApiError,
    Conflict,
    Invalid,
    NotFound,
    Overloaded,
    TooLarge,
    Unauthorized,
)
from .jobs import ACTIVE, JOB_ID_PATTERN, Upload, accept_upload, job_runner, job_status, read_job, upload_sweep
from .page import page_file
from .schemas import (
    EDIT_TYPE_WORDS,
    NOT_BLANK,
    ClipDetail,
    ClipList,
    ClipSummary,
    EditRequest,
    EditType,
    ErrorBody,
    Health,
    JobCreated,
    JobStatus,
)
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "overloaded",
}
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}
EDIT_HEADERS = {
    "X-Nrt-Eta": "η used",
    "X-Nrt-Steps": "diffusion steps used",
    "X-Nrt-Guidance": "guidance scale used",
    "X-Nrt-Scheduler": "sampler used",
    "X-Nrt-Start": "start of step 3 used: noise, input or inversion",
    "X-Nrt-T-Start": "t_start used (the noise start ignores it)",
    "X-Nrt-Keep-Db": "keep_db used: the merge with the recording, in dB (0: off)",
    "X-Nrt-Seed": "seed used",
    "X-Nrt-Sample-Rate": "sample rate of the audio",
    "X-Nrt-Edit-Seconds": "time the edit took on the editor",
    "X-Nrt-Clap-Text": "with scores: CLAP text score",
    "X-Nrt-Clap-Audio": "with scores: CLAP audio score",
    "X-Nrt-Clap-Sum": "with scores: their sum",
    "X-Nrt-Clap-Model": "with scores: the CLAP model",
}
BODY_SLACK = 64 * 1024  # room for the multipart framing and the text fields around the audio
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # the order Allow lists them in

Guards = list[Any]  # the dependencies of a route that needs the token


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": CODES.get(code, "error")} for code in codes}


# The pattern is stated, not checked here: validate_clip_id checks it and says what is wrong.
ClipId = Annotated[
    str,
    Path(
        description="the clip's id: letters, digits, '-', '_', '.'; no leading dot",
        max_length=MAX_CLIP_ID,
        json_schema_extra={"pattern": CLIP_ID_PATTERN},
    ),
]
JobId = Annotated[
    str,
    Path(
        description="the job id POST /v1/clips returned (32 hexadecimal digits)",
        json_schema_extra={"pattern": JOB_ID_PATTERN},
    ),
]


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, before it is read whole."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.limit:
            return await _error_response(self._error())(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # a body sent without its length: the app's handlers answer 413
                raise StarletteHTTPException(413, self._error().detail)
            return message

        await self.app(scope, counted, send)

    def _error(self) -> TooLarge:
        return TooLarge(
            f"the request body is over {self.limit} bytes; uploads may have at most {self.limit - BODY_SLACK} bytes"
        )


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """``Allow`` for the request's path: the methods of every route that takes the path, and OPTIONS."""
    methods = {"OPTIONS"}
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    order = {method: i for i, method in enumerate(METHODS)}
    return ", ".join(sorted(methods, key=lambda method: (order.get(method, len(order)), method)))


def _describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    parts, status = [], 422
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            status = 400
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "path", "query", "form"))
        value = f" (got {error['input']!r})" if "input" in error and error.get("type") != "missing" else ""
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}{value}"[:300])
    return status, "; ".join(parts) or "invalid request"


def create_app(service: "Ingress") -> FastAPI:
    """The FastAPI app of one ingress replica; its routes, grouped by resource, use the replica's state."""
    settings = service.settings
    app = FastAPI(
        title="nrt",
        version=__version__,
        description=(
            "Edit recorded audio with free-form text prompts (Imagic for audio latent diffusion). "
            "Clips the sweep fitted are in the registry with the best settings its search found; "
            "`POST /v1/clips/{clip_id}/edits` makes an edit with them, or with the settings you give. "
            "Every endpoint but `/healthz` needs `Authorization: Bearer <token>` when the service has a token; "
            "the listening page at `/` holds no data and asks the visitor for it. "
            f"{describe_clap(settings.clap or DEFAULT_CLAP)}"
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + BODY_SLACK)
    guarded = [Depends(_authorizer(settings))]
    _add_error_handlers(app)
    _add_description_routes(app, guarded)
    _add_health_routes(app, settings)
    _add_page_routes(app)
    _add_clip_routes(app, service, guarded)
    _add_edit_routes(app, service, guarded)
    _add_upload_routes(app, service, guarded)
    return app


def _authorizer(settings: ServiceSettings) -> Callable[..., None]:
    """The dependency of every guarded route: the bearer token, where the service has one."""
    bearer = HTTPBearer(auto_error=False, description="the service's API token (NRT_API_TOKEN)")

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.api_token is None:
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized(
                "this service needs an Authorization: Bearer <token> header", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(credentials.credentials.encode(), settings.api_token.encode()):
            raise Unauthorized("the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})

    return authorize


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error", "detail"}``; a 405 names every method of its path."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = _describe_validation(exc)
        return JSONResponse(
            {"error": "bad_request" if status == 400 else "invalid_request", "detail": detail}, status_code=status
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # the router names one route's methods; the path may have more
            headers = {**(headers or {}), "Allow": _allowed_methods(app, request.scope)}
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
        return JSONResponse(
            {"error": CODES.get(exc.status_code, "error"), "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal", "detail": f"{type(exc).__name__}: the service failed; see its logs"}, status_code=500
        )


def _add_description_routes(app: FastAPI, guarded: Guards) -> None:
    """The OpenAPI description and its Swagger page, behind the token."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="nrt API")


def _add_health_routes(app: FastAPI, settings: ServiceSettings) -> None:
    """``/healthz``: no token needed."""

    @app.get("/healthz", response_model=Health, summary="Is the service up (no token needed)")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": settings.model}


def _add_page_routes(app: FastAPI) -> None:
    """The listening page: no data in it, so no token; it calls the API with the visitor's."""

    @app.get("/", include_in_schema=False, response_class=Response)
    def page() -> Response:
        return page_file("index.html")

    @app.get("/static/{name}", include_in_schema=False, response_class=Response)
    def page_asset(name: str) -> Response:
        return page_file(name)


def _add_clip_routes(app: FastAPI, service: "Ingress", guarded: Guards) -> None:
    """The registry: every clip, one clip, a clip's input."""

    @app.get(
        "/v1/clips",
        response_model=ClipList,
        dependencies=guarded,
        responses=_errors(401),
        summary="Every clip the registry holds, with its best settings and scores",
    )
    def list_clips() -> dict[str, Any]:
        clips = []
        for entry in list_registry(service.storage):
            try:
                clips.append(_summary(entry))
            except (KeyError, TypeError, ValidationError) as exc:
                logger.warning("registry entry of %s left out: %s", entry.get("clip_id"), exc)
        return {"clips": clips}

    @app.get(
        "/v1/clips/{clip_id}",
        response_model=ClipDetail,
        dependencies=guarded,
        responses=_errors(401, 404, 422),
        summary="One clip: best settings, scores, fit and search",
    )
    def get_clip(clip_id: ClipId) -> dict[str, Any]:
        entry = service.entry(clip_id)
        return {
            **_summary(entry),
            "mask": entry.get("mask"),
            "fit": entry.get("fit") or {},
            "search": entry.get("search") or {},
            "seconds": entry.get("seconds"),
            "clap_note": describe_clap(entry["scores"].get("clap", "?")),
            "links": {"input": f"/v1/clips/{clip_id}/input", "edits": f"/v1/clips/{clip_id}/edits"},
        }

    @app.get(
        "/v1/clips/{clip_id}/input",
        dependencies=guarded,
        response_class=Response,
        responses={
            200: {"content": {t: {} for t in AUDIO_TYPES.values()}, "description": "the input as given"},
            **_errors(401, 404, 422),
        },
        summary="The clip's input audio, exactly as it was given",
    )
    def get_input(clip_id: ClipId) -> Response:
        entry = service.entry(clip_id)
        rel = entry.get("input")
        if not rel or not service.storage.exists(rel):
            meta = service.storage.read_json(f"{entry['bundle']}/bundle.json")
            rel = f"{entry['bundle']}/{meta['input']['file']}"
        suffix = PurePath(rel).suffix.lower()
        return Response(
            service.storage.read_bytes(rel),
            media_type=AUDIO_TYPES.get(suffix, "application/octet-stream"),
            headers={"Content-Disposition": f'attachment; filename="{clip_id}{suffix}"'},
        )


def _add_edit_routes(app: FastAPI, service: "Ingress", guarded: Guards) -> None:
    """Edits of a registered clip, made by the editor deployment."""

    @app.post(
        "/v1/clips/{clip_id}/edits",
        dependencies=guarded,
        response_class=Response,
        responses={
            200: {
                "content": {"audio/wav": {}, "audio/flac": {}},
                "description": "the edit, at the input's sample rate, length and channels",
                "headers": {k: {"description": v, "schema": {"type": "string"}} for k, v in EDIT_HEADERS.items()},
            },
            **_errors(400, 401, 404, 409, 413, 422, 503),
        },
        summary="Edit a clip: absent fields take the clip's best settings",
    )
    async def edit(clip_id: ClipId, body: Annotated[EditRequest | None, Body()] = None) -> Response:
        request = body or EditRequest()
        entry = await run_in_threadpool(service.entry, clip_id)
        best = complete_settings(entry["best"])
        job = EditJob(
            bundle=entry["bundle"],
            eta=_pick(request.eta, best["eta"], float),
            steps=_pick(request.steps, best["steps"], int),
            guidance=_pick(request.guidance, best["guidance"], float),
            scheduler=_pick(request.scheduler, best["scheduler"], str),
            start=_pick(request.start, best["start"], str),
            t_start=_pick(request.t_start, best["t_start"], float),
            keep_db=_pick(request.keep_db, best["keep_db"], float),
            seed=_pick(request.seed, best["seed"], int),
            format=request.format,
            subtype=request.subtype,
            scores=request.scores,
        )
        try:
            job.check()
        except InputError as exc:  # a registry entry outside today's ranges
            raise Invalid(str(exc)) from None
        result = await service.run_edit(clip_id, job)
        headers = {
            "X-Nrt-Eta": repr(job.eta),
            "X-Nrt-Steps": str(job.steps),
            "X-Nrt-Guidance": repr(job.guidance),
            "X-Nrt-Scheduler": job.scheduler,
            "X-Nrt-Start": job.start,
            "X-Nrt-T-Start": repr(job.t_start),
            "X-Nrt-Keep-Db": repr(job.keep_db),
            "X-Nrt-Seed": str(job.seed),
            "X-Nrt-Sample-Rate": str(result["sample_rate"]),
            "X-Nrt-Edit-Seconds": f"{result['seconds']:.3f}",
            "Content-Disposition": f'attachment; filename="{clip_id}-eta{job.eta:.2f}-seed{job.seed}.{job.format}"',
        }
        if result.get("scores"):
            scores = result["scores"]
            headers.update(
                {
                    "X-Nrt-Clap-Text": repr(scores["text"]),
                    "X-Nrt-Clap-Audio": repr(scores["audio"]),
                    "X-Nrt-Clap-Sum": repr(scores["sum"]),
                    "X-Nrt-Clap-Model": str(result["clap"]),
                }
            )
        return Response(result["audio"], media_type=result["media_type"], headers=headers)


def _add_upload_routes(app: FastAPI, service: "Ingress", guarded: Guards) -> None:
    """Uploads, fitted and searched in the background, and their jobs."""
    settings = service.settings

    @app.post(
        "/v1/clips",
        status_code=202,
        response_model=JobCreated,
        dependencies=guarded,
        responses=_errors(400, 401, 409, 413, 422, 503),
        summary="Upload a clip: it is fitted and searched in the background, then editable",
    )
    async def upload(
        audio: Annotated[
            UploadFile,
            File(
                description=f"the recording (wav, flac, ogg, mp3), at most "
                f"{settings.max_upload_mb:g} MB and {settings.max_seconds:g} s",
                json_schema_extra={"minLength": 1, "maxLength": settings.max_upload_bytes},
            ),
        ],
        target_prompt: Annotated[
            str,
            Form(
                description="what the edit should sound like (not blank)",
                min_length=1,
                max_length=settings.max_prompt,
                json_schema_extra={"pattern": NOT_BLANK},
            ),
        ],
        edit_type: Annotated[EditType, Form(description=EDIT_TYPE_WORDS)] = "addition",
        mask: Annotated[
            str | None,
            Form(
                description="inpainting ranges in seconds, start-end joined by ';', with "
                "edit_type inpainting only (default: the input's silent gaps)",
                max_length=2000,
            ),
        ] = None,
        clip_id: Annotated[
            Annotated[str, Field(json_schema_extra={"pattern": CLIP_ID_PATTERN})] | None,
            Form(
                description="id for the clip: letters, digits, '-', '_', '.'; no leading dot "
                "(default: from the file name)",
                max_length=MAX_CLIP_ID,
            ),
        ] = None,
    ) -> dict[str, Any]:
        data = await audio.read(settings.max_upload_bytes + 1)
        runner = service.runner()
        if len(await runner.active.remote()) >= settings.max_jobs:
            raise Overloaded(
                f"{settings.max_jobs} uploads are being fitted already; try again later", headers={"Retry-After": "60"}
            )
        upload = Upload(data, audio.filename, target_prompt, edit_type, mask, clip_id)
        record = await run_in_threadpool(accept_upload, settings, service.storage, upload)
        await runner.submit.remote(record, service.sweep_config())
        logger.info("upload %s: clip %s, job %s", audio.filename, record["clip_id"], record["job_id"])
        return {"clip_id": record["clip_id"], "job_id": record["job_id"]}

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        dependencies=guarded,
        responses=_errors(401, 404),
        summary="Where an upload's fit and search are",
    )
    async def get_job(job_id: JobId) -> dict[str, Any]:
        record = await run_in_threadpool(read_job, service.storage, job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}")
        board = await service.board_state(record["clip_id"])
        status = await run_in_threadpool(job_status, service.storage, record, board)
        if status["state"] in ACTIVE and record["clip_id"] not in await service.runner().active.remote():
            service.runner().resume.remote(service.sweep_config())  # its runner went down with a node
        return status


def _pick(value: Any, best: Any, kind: type) -> Any:
    return kind(best) if value is None else value


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    scores = entry["scores"]
    return ClipSummary(
        clip_id=entry["clip_id"],
        edit_type=entry["edit_type"],
        target_prompt=entry["target_prompt"],
        model=entry.get("model", "?"),
        best=complete_settings(entry["best"]),
        scores={k: v for k, v in scores.items() if not (isinstance(v, float) and not math.isfinite(v))},
        trials=entry.get("trials", {}),
        created=entry.get("created"),
    ).model_dump()


class Ingress:
    """The ingress deployment's state: settings, storage, the editor's handle, the job runner."""

    def __init__(self, editor, settings: ServiceSettings) -> None:
        import ray

        self.settings = settings
        self.storage = Storage(settings.storage)
        self.editor = editor
        self._gpus = ray.cluster_resources().get("GPU", 0.0)
        self._runner = None
        self._board = None
        try:  # uploads left unfinished by a cluster that went down start again
            self.runner().resume.remote(self.sweep_config())
        except Exception:
            logger.exception("could not resume unfinished uploads")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self)

    def entry(self, clip_id: str) -> dict[str, Any]:
        """The clip's registry entry, read now; 422 for an id that cannot be one, 404 for none."""
        try:
            validate_clip_id(clip_id)
        except InputError as exc:
            raise Invalid(str(exc)) from None
        entry = read_registry_entry(self.storage, clip_id)
        if entry is None:
            raise NotFound(f"no clip {clip_id!r} in the registry of {self.storage.root}; GET /v1/clips lists them")
        return entry

    def sweep_config(self):
        return upload_sweep(self.settings, self._gpus)

    def runner(self):
        if self._runner is None:
            self._runner = job_runner(self.storage)
        return self._runner

    async def board_state(self, clip_id: str) -> dict[str, Any] | None:
        import ray

        from ..sweep.progress import board_name

        try:
            board = ray.get_actor(board_name(self.storage), namespace=NAMESPACE)
            _, snapshot = await board.snapshot.remote(-1)
        except Exception:
            return None
        return snapshot.get(clip_id)

    async def run_edit(self, clip_id: str, job: EditJob) -> dict[str, Any]:
        """The editor's answer for ``job``; 503 when its queue is full."""
        from ray.serve.exceptions import BackPressureError

        try:
            result = await self.editor.options(multiplexed_model_id=clip_id).edit.remote(job.to_dict())
        except BackPressureError:
            raise Overloaded(
                "every editor is busy and the queue is full; try again shortly", headers={"Retry-After": "5"}
            ) from None
        if "status" in result:
            error = {409: Conflict, 422: Invalid}.get(result["status"], ApiError)
            raise error(result["detail"])
        return result
