"""The HTTP API agrees with its own OpenAPI description.

Schemathesis generates requests from the schema the service publishes (every phase of its run:
the schema's examples, boundary values and methods a path does not take, random requests, and
chains of them) and sends them, with the token, to the ingress's own FastAPI app in this
process. Every answer must be one the schema documents (status, content type, body, headers)
and none a 5xx; a request the schema admits must be accepted, one it refuses must get a 4xx;
a method a path does not take gets 405, and OPTIONS an ``Allow`` naming the path's methods.

Only Ray is left out: the editor answers with a short tone, and the job runner starts nothing.
The registry holds one clip, whose input and edits are served.
"""

import asyncio
import os
import re
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
schemathesis = pytest.importorskip("schemathesis")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import Status, events  # noqa: E402

from nrt.audio import encode_audio  # noqa: E402
from nrt.errors import InputError  # noqa: E402
from nrt.manifest import (  # noqa: E402
    CLIP_ID_PATTERN,
    MAX_CLIP_ID,
    validate_clip_id,
)
from nrt.service.api import Ingress, create_app  # noqa: E402
from nrt.service.editor import MEDIA_TYPES, EditJob  # noqa: E402
from nrt.service.settings import ServiceSettings  # noqa: E402
from nrt.storage import Storage, write_registry_entry  # noqa: E402

pytestmark = pytest.mark.slow

TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RATE = 16000
CLIP = "beep"

RUN = {
    "headers": AUTH,
    "seed": 20240517,  # the same requests on every run
    "generation": {"max-examples": 30, "database": "none"},
    "checks": {
        # the service's refusals: malformed, token, unknown id, method, too large, out of range
        "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 422]},
        "positive_data_acceptance": {"expected-statuses": ["2xx", 404]},
    },
    "operations": [{
        # an upload is accepted only once its bytes decode as a recording and its mask's ranges are in
        # order and fit it (inpainting only): no schema states that, so a valid-looking upload may get 400 or 422
        "include-path": "/v1/clips", "include-method": "POST",
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }],
}


class _Reply:
    """One method of a Ray actor handle, answering at once with ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def remote(self, *args: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.value)
        return future


class IdleRunner:
    """The job runner's handle: no upload is running, and one submitted is never started."""

    active = _Reply([])
    submit = _Reply(None)
    resume = _Reply(None)


class Offline(Ingress):
    """The ingress over a storage root without Ray: its editor answers every edit with a short tone."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage)
        self.editor = None
        self._gpus = 0.0
        self._runner = IdleRunner()
        self._board = None

    def sweep_config(self) -> None:
        return None

    async def board_state(self, clip_id: str) -> None:
        return None

    async def run_edit(self, clip_id: str, job: EditJob) -> dict[str, Any]:
        scores = {"text": 0.1, "audio": 0.9, "sum": 1.0} if job.scores else None
        return {"audio": encode_audio(tone(), RATE, job.format, job.subtype), "media_type": MEDIA_TYPES[job.format],
                "sample_rate": RATE, "seconds": 0.0, "scores": scores, "clap": "tiny"}


def tone(seconds: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 660 * t))[:, None].astype(np.float32)


def publish(storage: Storage) -> None:
    """One clip in the registry, as the sweep publishes it, with its input in place."""
    storage.write_bytes(f"clips/{CLIP}/input.wav", encode_audio(tone(), RATE, "wav"))
    write_registry_entry(storage, {
        "clip_id": CLIP, "edit_type": "addition", "target_prompt": "a beep with a dog barking", "mask": None,
        "input": f"clips/{CLIP}/input.wav", "model": "tiny", "bundle": f"bundles/{CLIP}/lora-test0000000",
        "fit": {}, "best": {"eta": 0.5, "steps": 3, "guidance": 2.0, "scheduler": "ddpm", "seed": 0},
        "scores": {"text": 0.1, "audio": 0.9, "sum": 1.0, "clap": "tiny"},
        "trials": {"run": 2, "done": 2, "failed": 0}, "search": {"eta": "0:1"}, "files": [f"clips/{CLIP}/input.wav"],
    })


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> FastAPI:
    # a small upload limit keeps the boundary values the run sends small
    settings = ServiceSettings(storage=str(tmp_path_factory.mktemp("api") / "root"), model="tiny", api_token=TOKEN,
                               max_upload_mb=0.01)
    service = Offline(settings)
    publish(service.storage)
    return create_app(service)


def whole_numbers_as_integers(context: Any, body: Any) -> Any:
    """``steps`` and ``seed`` as JSON integers: the service refuses ``3.0`` for 3 (422), which a
    JSON Schema ``integer`` admits and no schema can rule out."""
    if isinstance(body, dict):
        return {k: int(v) if k in ("steps", "seed") and isinstance(v, float) and v.is_integer() else v
                for k, v in body.items()}
    return body


def run(schema: Any) -> tuple[int, list[str], list[str]]:
    """Schemathesis' full run over ``schema``: requests sent, the failed checks, the errors."""
    sent, failures, errors = 0, {}, []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent += sum(i.response is not None for i in event.recorder.interactions.values())
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.setdefault((event.recorder.label, check.name, failure.title),
                                            f"{failure.message}\n{check.failure_info.code_sample}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(repr(event))
    return sent, [f"{label}: {name}: {title}\n{text}" for (label, name, title), text in failures.items()], errors


def test_generated_requests_get_the_answers_the_schema_documents(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH,
                                            config=SchemathesisConfig.from_dict(RUN))
    schema.hook("map_body")(whole_numbers_as_integers)
    sent, failures, errors = run(schema)
    assert not errors, errors
    assert not failures, "\n\n".join(failures)
    assert sent >= 300


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    with TestClient(app, headers=AUTH) as client:
        yield client


def test_the_schema_states_the_clip_id_rule(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/clips/{clip_id}", "/v1/clips/{clip_id}/input", "/v1/clips/{clip_id}/edits"):
        for operation in spec["paths"][path].values():
            [parameter] = operation["parameters"]
            assert parameter["schema"]["pattern"] == CLIP_ID_PATTERN
            assert parameter["schema"]["maxLength"] == MAX_CLIP_ID
    form = spec["components"]["schemas"]["Body_upload_v1_clips_post"]["properties"]
    assert form["clip_id"]["anyOf"][0] == {"type": "string", "maxLength": MAX_CLIP_ID, "pattern": CLIP_ID_PATTERN}
    assert form["audio"]["minLength"] == 1 and form["audio"]["maxLength"] == 10_000
    for text in ("a", "beep", "Dog_bark-2.take.3", "_x", "-x", "x.", "9" * MAX_CLIP_ID,
                 "", ".hidden", ".", "..", "a b", "a/b", "a\\b", "../evil", "ü", "a:b", "9" * (MAX_CLIP_ID + 1)):
        try:
            accepted = validate_clip_id(text) == text
        except InputError:
            accepted = False
        assert accepted == (re.fullmatch(CLIP_ID_PATTERN, text) is not None), text


def test_a_path_names_all_its_methods_to_options_and_in_405s(client):
    options = client.options("/v1/clips")
    assert options.status_code == 204 and options.headers["allow"] == "GET, POST, OPTIONS"
    assert client.options("/v1/clips/beep/edits").headers["allow"] == "POST, OPTIONS"
    for method in ("DELETE", "PUT", "HEAD"):
        refused = client.request(method, "/v1/clips")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, POST, OPTIONS"
    body = client.delete("/v1/clips").json()
    assert body == {"error": "method_not_allowed", "detail": "Method Not Allowed"}
    assert client.options("/v1/nothing").status_code == 404


def test_step_3s_start_is_an_edit_field_the_schema_states_and_an_old_entry_reads_as_noise(client):
    spec = client.get("/openapi.json").json()
    fields = spec["components"]["schemas"]["EditRequest"]["properties"]
    assert fields["start"]["anyOf"][0] == {"type": "string", "enum": ["noise", "input", "inversion"]}
    assert {k: fields["t_start"]["anyOf"][0][k] for k in ("exclusiveMinimum", "maximum")} == {
        "exclusiveMinimum": 0, "maximum": 1}
    assert spec["components"]["schemas"]["Settings"]["properties"]["start"]["enum"] == ["noise", "input", "inversion"]
    # the registry entry here has no start: it was made from noise, and edits without one still are
    assert client.get(f"/v1/clips/{CLIP}").json()["best"] == {
        "eta": 0.5, "steps": 3, "guidance": 2.0, "scheduler": "ddpm", "seed": 0, "start": "noise", "t_start": 0.6,
        "keep_db": 0.0}  # nor keep_db: it was not merged with the recording
    assert client.get("/v1/clips").json()["clips"][0]["best"]["start"] == "noise"
    plain = client.post(f"/v1/clips/{CLIP}/edits", json={"eta": 0.2})
    assert plain.status_code == 200
    assert (plain.headers["X-Nrt-Start"], plain.headers["X-Nrt-T-Start"]) == ("noise", "0.6")
    inverted = client.post(f"/v1/clips/{CLIP}/edits", json={"start": "inversion", "t_start": 1})
    assert inverted.status_code == 200 and inverted.headers["content-type"] == "audio/wav"
    assert (inverted.headers["X-Nrt-Start"], inverted.headers["X-Nrt-T-Start"]) == ("inversion", "1.0")
    for body, field in (({"start": "middle"}, "start"), ({"start": None, "t_start": 0.0}, "t_start"),
                        ({"t_start": 1.01}, "t_start"), ({"t_start": "0.5"}, "t_start")):
        refused = client.post(f"/v1/clips/{CLIP}/edits", json=body)
        assert refused.status_code == 422 and refused.json()["error"] == "invalid_request", body
        assert refused.json()["detail"].startswith(f"{field}: "), refused.json()
    assert client.post(f"/v1/clips/{CLIP}/edits", json={"start": "input"}).headers["X-Nrt-Start"] == "input"


def test_keep_db_is_an_edit_field_and_an_old_entry_reads_as_off(client):
    fields = client.get("/openapi.json").json()["components"]["schemas"]["EditRequest"]["properties"]
    assert {k: fields["keep_db"]["anyOf"][0][k] for k in ("minimum", "maximum")} == {"minimum": 0, "maximum": 100}
    plain = client.post(f"/v1/clips/{CLIP}/edits", json={"eta": 0.2})
    assert plain.status_code == 200 and plain.headers["X-Nrt-Keep-Db"] == "0.0"
    kept = client.post(f"/v1/clips/{CLIP}/edits", json={"eta": 0.2, "keep_db": 100, "subtype": "FLOAT"})
    assert kept.status_code == 200 and kept.headers["X-Nrt-Keep-Db"] == "100.0"
    for body in ({"keep_db": -1}, {"keep_db": 101}, {"keep_db": "10"}):
        refused = client.post(f"/v1/clips/{CLIP}/edits", json=body)
        assert refused.status_code == 422 and refused.json()["detail"].startswith("keep_db: "), refused.json()
