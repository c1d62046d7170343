"""The HTTP service on a local Ray with 2 CPUs: tiny backbone, tiny CLAP, Serve on 127.0.0.1.

One Ray and one Serve application for the module, against a registry written here: a tiny fit
saved as a bundle in the storage layout and published with nrt.storage, as the sweep does.
"""

import concurrent.futures
import io
import os
import re
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.conftest import HANG_SECONDS, write_tone_clip

ray = pytest.importorskip("ray")
pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
requests = pytest.importorskip("requests")

from nrt.storage import Storage, write_registry_entry  # noqa: E402
from tests.service_setup import (  # noqa: E402
    BEST,
    CHANNELS,
    RATE,
    ROOT,
    TOKEN,
    fit_tiny_bundle,
    load_module,
    publish,
    running_service,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fit_tiny_bundle(tmp_path_factory.mktemp("fitted"))


@pytest.fixture(scope="module")
def storage(fitted, tmp_path_factory):
    storage = Storage(tmp_path_factory.mktemp("service") / "root")
    write_registry_entry(storage, publish(storage, "beep", fitted, "a beep with a dog barking"))
    return storage


@pytest.fixture(scope="module")
def numba_cache(tmp_path_factory):
    """An empty numba cache for the service's Ray workers: scoring an edit (``scores: true``) and
    an upload's background search must compile no numba code into it (see nrt/spectrogram.py)."""
    return tmp_path_factory.mktemp("numba")


@pytest.fixture(scope="module")
def service(storage, numba_cache):
    """The service with a token, small queues and a smoke budget for uploads; a session with the token."""
    before = os.environ.get("NUMBA_CACHE_DIR")
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache)  # Ray's workers inherit it from ray.init
    settings = {
        "storage": storage.root, "model": "tiny", "api_token": TOKEN, "max_queued_requests": "2",
        "max_clips_per_replica": "1",
        "max_upload_mb": "0.5", "job_preset": "smoke", "job_trials": "2", "job_fit_cpus": "0.5",
        "job_trial_cpus": "0.5", "editor_cpus": "0.5",
    }
    try:
        with running_service(settings) as url:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            try:
                yield url, session
            finally:
                session.close()
    finally:
        if before is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            os.environ["NUMBA_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def upload(service, tmp_path_factory):
    """An upload accepted early, so that its fit and search run while the other tests do."""
    url, session = service
    wav = write_tone_clip(tmp_path_factory.mktemp("upload") / "upload.wav")
    with open(wav, "rb") as f:
        response = session.post(f"{url}/v1/clips", files={"audio": ("uploaded beep.wav", f, "audio/wav")},
                                data={"target_prompt": "a beep and a cat", "edit_type": "addition", "clip_id": "uploaded"})
    return response, wav


def edit(service, clip_id: str = "beep", **body) -> requests.Response:
    url, session = service
    return session.post(f"{url}/v1/clips/{clip_id}/edits", json=body or None, timeout=HANG_SECONDS)


def assert_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    return body


# -- reading the registry and editing -----------------------------------------------------------
def test_health_is_open_and_everything_else_needs_the_token(service, upload):
    url, _ = service
    assert requests.get(f"{url}/healthz").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/v1/clips", "/v1/clips/beep", "/openapi.json"):
            body = assert_error(requests.get(f"{url}{path}", headers=headers), 401)
            assert body["error"] == "unauthorized"
        assert_error(requests.post(f"{url}/v1/clips/beep/edits", json={}, headers=headers), 401)
    ok = requests.get(f"{url}/v1/clips", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and [c["clip_id"] for c in ok.json()["clips"]] == ["beep"]


def test_a_clip_shows_its_best_settings_and_its_input(service, fitted):
    url, session = service
    clip = session.get(f"{url}/v1/clips/beep").json()
    # BEST is an entry as sweeps wrote it before step 3's start was searched: it was made from noise
    assert "start" not in BEST and clip["best"] == {**BEST, "start": "noise", "t_start": 0.6, "keep_db": 0.0}
    assert clip["scores"]["sum"] == 1.0 and clip["target_prompt"] == "a beep with a dog barking"
    assert "Table 1" in clip["clap_note"]
    given = session.get(f"{url}/v1/clips/beep/input")
    assert given.status_code == 200 and given.headers["content-type"] == "audio/flac"
    samples, rate = sf.read(io.BytesIO(given.content), dtype="float32", always_2d=True)
    assert rate == RATE and samples.shape == (RATE, CHANNELS)


def test_an_edit_is_a_wav_of_the_inputs_length_and_rate_made_with_the_best_settings(service):
    response = edit(service)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
    assert rate == RATE and samples.shape == (RATE, CHANNELS) and np.abs(samples).max() > 0
    headers = response.headers
    assert float(headers["X-Nrt-Eta"]) == BEST["eta"] and int(headers["X-Nrt-Steps"]) == BEST["steps"]
    assert float(headers["X-Nrt-Guidance"]) == BEST["guidance"] and int(headers["X-Nrt-Seed"]) == BEST["seed"]
    assert headers["X-Nrt-Scheduler"] == "ddpm" and "X-Nrt-Clap-Sum" not in headers
    assert headers["X-Nrt-Start"] == "noise" and float(headers["X-Nrt-T-Start"]) == 0.6
    assert sf.info(io.BytesIO(response.content)).subtype == "PCM_16"


def test_an_edit_can_start_from_the_input_or_its_inversion(service):
    from_noise = edit(service, seed=5, subtype="FLOAT")
    assert edit(service, seed=5, subtype="FLOAT", start="noise", t_start=0.3).content == from_noise.content  # ignored
    for start in ("input", "inversion"):
        response = edit(service, seed=5, subtype="FLOAT", start=start, t_start=0.5)
        assert response.status_code == 200, response.text
        assert response.headers["X-Nrt-Start"] == start and float(response.headers["X-Nrt-T-Start"]) == 0.5
        samples, rate = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
        assert rate == RATE and samples.shape == (RATE, CHANNELS) and np.isfinite(samples).all()
        assert response.content != from_noise.content
    # a start given alone takes the clip's t_start, a t_start alone the clip's start (noise here)
    assert float(edit(service, seed=5, start="input").headers["X-Nrt-T-Start"]) == 0.6
    assert edit(service, seed=5, t_start=0.5).headers["X-Nrt-Start"] == "noise"


def test_a_seed_gives_the_same_bytes_and_overrides_change_them(service):
    # 32-bit float samples: the tiny model's edits differ by less than one 16-bit step
    first, again = edit(service, seed=5, subtype="FLOAT"), edit(service, seed=5, subtype="FLOAT")
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    other_seed = edit(service, seed=6, subtype="FLOAT")
    assert other_seed.content != first.content and int(other_seed.headers["X-Nrt-Seed"]) == 6
    low, high = (edit(service, seed=5, eta=eta, guidance=20.0, subtype="FLOAT") for eta in (0.0, 1.0))
    assert low.content != high.content and float(high.headers["X-Nrt-Eta"]) == 1.0
    assert sf.info(io.BytesIO(first.content)).subtype == "FLOAT"
    flac = edit(service, seed=5, format="flac", steps=2, guidance=1.0, scheduler="ddim")
    assert flac.headers["content-type"] == "audio/flac"
    samples, rate = sf.read(io.BytesIO(flac.content), always_2d=True)
    assert rate == RATE and samples.shape == (RATE, CHANNELS)
    assert flac.headers["X-Nrt-Steps"] == "2" and flac.headers["X-Nrt-Scheduler"] == "ddim"


def test_scores_come_in_headers_when_asked(service):
    response = edit(service, seed=5, scores=True, subtype="FLOAT")
    assert response.status_code == 200
    text, audio, total = (float(response.headers[f"X-Nrt-Clap-{k}"]) for k in ("Text", "Audio", "Sum"))
    assert total == pytest.approx(text + audio) and -1 <= text <= 1 and -1 <= audio <= 1
    assert response.headers["X-Nrt-Clap-Model"] == "tiny"
    assert response.content == edit(service, seed=5, subtype="FLOAT").content  # scoring changes no sample


# -- bad input ------------------------------------------------------------------------------------
BAD_EDITS = [
    ("unknown clip", "nothing-here", {"seed": 1}, 404),
    ("leading dot", ".hidden", {}, 422),
    ("space in the id", "a%20b", {}, 422),
    ("path characters", "..%2F..%2Fetc", {}, 404),
    ("eta above 1", "beep", {"eta": 1.5}, 422),
    ("eta below 0", "beep", {"eta": -0.1}, 422),
    ("eta of the wrong type", "beep", {"eta": "high"}, 422),
    ("steps 0", "beep", {"steps": 0}, 422),
    ("steps over 1000", "beep", {"steps": 1001}, 422),
    ("steps not whole", "beep", {"steps": 2.5}, 422),
    ("steps as text", "beep", {"steps": "3"}, 422),
    ("guidance over 20", "beep", {"guidance": 25}, 422),
    ("seed below 0", "beep", {"seed": -1}, 422),
    ("seed over 2^32-1", "beep", {"seed": 2**32}, 422),
    ("unknown format", "beep", {"format": "mp3"}, 422),
    ("float flac", "beep", {"format": "flac", "subtype": "FLOAT"}, 422),
    ("scores as a number", "beep", {"scores": 1}, 422),
    ("unknown start", "beep", {"start": "middle"}, 422),
    ("start not a string", "beep", {"start": 1}, 422),
    ("t_start 0", "beep", {"start": "input", "t_start": 0}, 422),
    ("t_start over 1", "beep", {"start": "inversion", "t_start": 1.5}, 422),
    ("t_start as text", "beep", {"t_start": "0.5"}, 422),
    ("unknown field", "beep", {"strength": 0.5}, 422),
]


@pytest.mark.parametrize("what, clip_id, body, status", BAD_EDITS, ids=[c[0] for c in BAD_EDITS])
def test_a_bad_edit_gets_its_status_and_the_next_good_one_succeeds(service, what, clip_id, body, status):
    url, session = service
    assert_error(session.post(f"{url}/v1/clips/{clip_id}/edits", json=body), status)
    assert edit(service, seed=1).status_code == 200


def test_malformed_json_is_a_400(service):
    url, session = service
    response = session.post(f"{url}/v1/clips/beep/edits", data=b"{eta: 0.5", headers={"Content-Type": "application/json"})
    assert assert_error(response, 400)["error"] == "bad_request"
    assert edit(service, seed=1).status_code == 200


def _upload(service, audio: bytes | None = b"", filename: str = "clip.wav", **fields) -> requests.Response:
    url, session = service
    data = {"target_prompt": "a beep and a cat", "edit_type": "addition", **fields}
    files = {"audio": (filename, audio, "audio/wav")} if audio is not None else None
    return session.post(f"{url}/v1/clips", data=data, files=files)


def test_bad_uploads_get_their_status_and_the_service_keeps_serving(service, tmp_path):
    wav = write_tone_clip(tmp_path / "ok.wav").read_bytes()
    cases = [
        ("not audio", dict(audio=os.urandom(4000)), 400, "bad_audio"),
        ("empty", dict(audio=b""), 400, "bad_audio"),
        ("over the upload limit", dict(audio=os.urandom(600_000)), 413, "too_large"),
        ("far over the upload limit", dict(audio=os.urandom(3_000_000)), 413, "too_large"),
        ("prompt over 500 characters", dict(audio=wav, target_prompt="beep " * 101), 422, "invalid_request"),
        ("empty prompt", dict(audio=wav, target_prompt=" "), 422, "invalid_request"),
        ("clip id with a path", dict(audio=wav, clip_id="../evil"), 422, "invalid_request"),
        ("unknown edit type", dict(audio=wav, edit_type="removal"), 422, "invalid_request"),
        ("bad mask", dict(audio=wav, edit_type="inpainting", mask="2-1"), 422, "invalid_request"),
        ("mask without inpainting", dict(audio=wav, mask="0.1-0.2"), 422, "invalid_request"),
        ("no audio field", dict(audio=None), 422, "invalid_request"),
        ("clip id in the registry", dict(audio=wav, clip_id="beep"), 409, "conflict"),
    ]
    for what, fields, status, code in cases:
        body = assert_error(_upload(service, **fields), status)
        assert body["error"] == code, what
    url, session = service
    head = b'--x\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n\r\n'
    chunks = (head if i == 0 else b"\0" * 100_000 for i in range(30))  # sent without a length: counted
    response = session.post(f"{url}/v1/clips", data=chunks, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert assert_error(response, 413)["error"] == "too_large"
    long_clip = io.BytesIO()  # 31 s in under the byte limit: over the CLI's 30 s
    sf.write(long_clip, np.full((8000 * 31, 1), 0.1, dtype=np.float32), 8000, format="WAV", subtype="PCM_U8")
    assert len(long_clip.getvalue()) < 500_000
    assert "too long" in assert_error(_upload(service, audio=long_clip.getvalue()), 422)["detail"]
    assert edit(service, seed=1).status_code == 200
    assert [c["clip_id"] for c in session.get(f"{url}/v1/clips").json()["clips"]] == ["beep"]  # nothing registered


# -- the registry changes while the service runs ---------------------------------------------------
def test_a_clip_added_after_startup_is_served_and_evicting_one_changes_nothing(service, storage, fitted):
    url, session = service
    assert_error(edit(service, "late"), 404)
    write_registry_entry(storage, publish(storage, "late", fitted, "a beep with a bird", best={**BEST, "eta": 0.2}))
    assert "late" in [c["clip_id"] for c in session.get(f"{url}/v1/clips").json()["clips"]]
    before = edit(service, "beep", seed=9, subtype="FLOAT").content
    late = edit(service, "late", seed=9, subtype="FLOAT")  # one clip per replica here: "beep" is evicted
    assert late.status_code == 200 and float(late.headers["X-Nrt-Eta"]) == 0.2
    assert edit(service, "beep", seed=9, subtype="FLOAT").content == before
    # the same bundle at the same settings gives the same edit, whichever clip id it is under
    assert edit(service, "late", seed=9, eta=0.5, subtype="FLOAT").content == before


def test_a_clip_whose_best_starts_from_its_inversion_is_edited_from_it(service, storage, fitted):
    url, session = service
    best = {**BEST, "start": "inversion", "t_start": 0.5}
    write_registry_entry(storage, publish(storage, "inverted", fitted, "a beep with a dog barking", best=best))
    assert session.get(f"{url}/v1/clips/inverted").json()["best"] == {**best, "keep_db": 0.0}
    response = edit(service, "inverted", seed=9, subtype="FLOAT")
    assert response.status_code == 200, response.text
    assert response.headers["X-Nrt-Start"] == "inversion" and float(response.headers["X-Nrt-T-Start"]) == 0.5
    same = edit(service, "beep", seed=9, subtype="FLOAT", start="inversion", t_start=0.5)  # the same bundle
    assert same.content == response.content
    assert edit(service, "inverted", seed=9, start="noise").headers["X-Nrt-Start"] == "noise"


def test_a_clip_whose_best_keeps_the_recording_gets_it_back_where_the_edit_left_it(service, storage, fitted):
    url, session = service
    # at 100 dB no change counts: every bin is the recording's
    best = {**BEST, "start": "inversion", "t_start": 0.5, "keep_db": 100.0}
    write_registry_entry(storage, publish(storage, "kept", fitted, "a beep with a dog barking", best=best))
    response = edit(service, "kept", seed=9, subtype="FLOAT")
    assert response.status_code == 200, response.text
    assert response.headers["X-Nrt-Keep-Db"] == "100.0"
    recording, _ = sf.read(io.BytesIO(session.get(f"{url}/v1/clips/kept/input").content), dtype="float32")
    edited, _ = sf.read(io.BytesIO(response.content), dtype="float32")
    np.testing.assert_allclose(edited, recording, atol=1e-5)
    plain = edit(service, "kept", seed=9, subtype="FLOAT", keep_db=0)
    assert plain.headers["X-Nrt-Keep-Db"] == "0.0"
    assert np.abs(sf.read(io.BytesIO(plain.content), dtype="float32")[0] - recording).max() > 1e-3  # the codec's copy


# -- limits ------------------------------------------------------------------------------------------
def test_edits_past_the_queue_get_503_not_a_hang(service):
    # one edit runs, the queue holds the next (max_queued_requests 2), the rest get 503 within a
    # second; 20 steps of the toy model keep the first busy several times longer than that
    slow = {"steps": 20, "seed": 3}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(edit, service, "beep", **slow) for _ in range(8)]
        responses = [f.result(timeout=HANG_SECONDS) for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert assert_error(response, 503)["error"] == "overloaded" and "Retry-After" in response.headers
    assert edit(service, seed=1).status_code == 200


def test_the_load_script_reports_no_errors(service, capsys):
    url, _ = service
    load = load_module("serve_load", ROOT / "serve" / "load.py")
    code = load.main(["--url", url, "--clip", "beep", "--requests", "6", "--concurrency", "2", "--token", TOKEN,
                      "--duration", str(HANG_SECONDS), "--timeout", str(HANG_SECONDS)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "requests: 6 " in out and "ok: 6" in out and "errors: 0" in out and "503s: 0" in out
    assert "latency p95:" in out and "throughput:" in out
    assert load.main(["--url", "http://example.com:8000"]) == 2  # loopback only


def test_the_listening_page_needs_no_token_and_loads_nothing_from_outside(service):
    url, _ = service
    page = requests.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert {"static/page.css", "static/page.js"} <= set(links)
    assert not [link for link in links if "//" in link or link.startswith("/")], links  # relative: the service's own
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        asset = requests.get(f"{url}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert not re.search(r"https?:|url\(|@import", asset.text), name
    assert_error(requests.get(f"{url}/static/app.py"), 404)
    assert_error(requests.get(f"{url}/v1/clips"), 401)  # what it shows still needs the token


def test_the_openapi_page_describes_every_endpoint_and_field(service):
    url, session = service
    spec = session.get(f"{url}/openapi.json").json()
    assert {(p, m) for p, ms in spec["paths"].items() for m in ms} == {
        ("/healthz", "get"), ("/v1/clips", "get"), ("/v1/clips", "post"), ("/v1/clips/{clip_id}", "get"),
        ("/v1/clips/{clip_id}/input", "get"), ("/v1/clips/{clip_id}/edits", "post"), ("/v1/jobs/{job_id}", "get")}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), (path, method)
            for parameter in operation.get("parameters", []):
                assert parameter.get("description"), (path, method, parameter["name"])
    schemas = spec["components"]["schemas"]
    for name in ("ClipList", "ClipSummary", "ClipDetail", "Settings", "Scores", "JobCreated", "JobStatus",
                 "JobProgress", "Health", "ErrorBody"):
        assert all(field.get("description") for field in schemas[name]["properties"].values()), name
    edit_request = schemas["EditRequest"]["properties"]
    assert set(edit_request) == {"eta", "steps", "guidance", "scheduler", "start", "t_start", "keep_db", "seed",
                                 "format", "subtype", "scores"}
    assert all(field.get("description") for field in edit_request.values())
    eta = edit_request["eta"]["anyOf"][0]
    assert (eta["minimum"], eta["maximum"]) == (0, 1)
    assert edit_request["start"]["anyOf"][0]["enum"] == ["noise", "input", "inversion"]
    t_start = edit_request["t_start"]["anyOf"][0]
    assert (t_start["exclusiveMinimum"], t_start["maximum"]) == (0, 1) and "minimum" not in t_start
    upload_form = next(iter(spec["paths"]["/v1/clips"]["post"]["requestBody"]["content"].values()))["schema"]
    form = spec["components"]["schemas"][upload_form["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert set(form) == {"audio", "target_prompt", "edit_type", "mask", "clip_id"}
    assert all(field.get("description") for field in form.values())
    assert form["target_prompt"]["maxLength"] == 500
    edit_responses = spec["paths"]["/v1/clips/{clip_id}/edits"]["post"]["responses"]
    assert {"200", "404", "422", "503"} <= set(edit_responses)
    assert {"X-Nrt-Eta", "X-Nrt-Start", "X-Nrt-T-Start"} <= set(edit_responses["200"]["headers"])
    assert session.get(f"{url}/docs").status_code == 200


# -- an upload, from job to editable clip ------------------------------------------------------------
def test_an_uploaded_clip_goes_from_job_to_editable(service, upload):
    url, session = service
    response, wav = upload
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["clip_id"] == "uploaded" and len(created["job_id"]) == 32
    assert_error(session.get(f"{url}/v1/jobs/{'0' * 32}"), 404)
    assert_error(_upload(service, audio=wav.read_bytes(), clip_id="uploaded"), 409)  # being fitted

    seen, deadline = [], time.time() + HANG_SECONDS
    while time.time() < deadline:
        status = session.get(f"{url}/v1/jobs/{created['job_id']}").json()
        if not seen or seen[-1] != status["state"]:
            seen.append(status["state"])
        if status["state"] in ("done", "failed"):
            break
        time.sleep(1)
    assert status["state"] == "done", (seen, status)
    assert set(seen) <= {"queued", "fitting", "searching", "done"}
    assert status["progress"]["fraction"] == 1.0 and status["progress"]["trials_total"] == 2
    assert status["links"]["edits"] == "/v1/clips/uploaded/edits"

    clip = session.get(f"{url}/v1/clips/uploaded").json()
    assert clip["trials"]["run"] == 2 and clip["target_prompt"] == "a beep and a cat"
    assert clip["best"]["start"] in ("noise", "input", "inversion") and 0.2 <= clip["best"]["t_start"] <= 1
    assert clip["search"]["start"] == "noise|input|inversion"  # the smoke preset searches the start
    edited = edit(service, "uploaded")
    assert edited.status_code == 200, edited.text
    assert edited.headers["X-Nrt-Start"] == clip["best"]["start"]
    samples, rate = sf.read(io.BytesIO(edited.content), always_2d=True)
    given, given_rate = sf.read(wav, always_2d=True)
    assert rate == given_rate and samples.shape == given.shape


def test_scoring_edits_and_searching_uploads_compiled_no_numba_code(service, upload, numba_cache):
    """After the scored edits and the upload's fit and search above, in the service's workers."""
    url, session = service
    assert session.get(f"{url}/v1/clips/uploaded").json()["trials"]["done"] == 2
    assert edit(service, seed=7, scores=True).status_code == 200
    assert sorted(str(p) for p in numba_cache.rglob("*") if p.is_file()) == []


# -- without Serve -------------------------------------------------------------------------------------
def test_the_editor_makes_the_edit_generate_makes_and_leaves_the_base_unet_bare(fitted, tmp_path):
    """LoRA and full bundles on one replica's base model: the adapter comes and goes with its clip."""
    from nrt.audio import load_audio
    from nrt.bundle import load_bundle, save_bundle
    from nrt.edit import generate, prepare_input
    from nrt.fit import fit
    from nrt.service.editor import ClipSlot, EditJob, EditorCore
    from nrt.service.settings import ServiceSettings
    from nrt.settings import FitConfig, SampleConfig

    storage = Storage(tmp_path / "root")
    core = EditorCore(ServiceSettings(storage=storage.root, model="tiny"), device="cpu")
    clip = load_audio(fitted / "input.flac", min_seconds=0)
    full = fit(core.backbone, prepare_input(core.backbone, clip).wave, "a beep",
               FitConfig(method="full", embed_steps=1, tune_steps=1, tune_lr=1e-3), progress=False)
    save_bundle(tmp_path / "full", full, core.backbone.info, clip, target_prompt="a beep")
    shutil.copytree(fitted, storage.local_path("bundles/lora/k"))
    shutil.copytree(tmp_path / "full", storage.local_path("bundles/full/k"))

    def adapters() -> int:
        return sum("lora_" in name for name, _ in core.backbone.unet.named_parameters())

    def edit_of(slot: ClipSlot) -> np.ndarray:
        job = EditJob(bundle=f"bundles/{slot.clip_id}/k", eta=0.3, steps=3, guidance=2.0, scheduler="ddpm",
                      seed=4, subtype="FLOAT")
        audio, _ = sf.read(io.BytesIO(core.edit(slot, job)["audio"]), dtype="float32", always_2d=True)
        return audio

    config = SampleConfig(steps=3, guidance=2.0)  # the references, made while the base UNet is bare
    references = {name: generate(core.backbone, load_bundle(storage.local_path(f"bundles/{name}/k")), [0.3], config,
                                 seed=4, progress=False)[0] for name in ("lora", "full")}
    lora, full_slot = ClipSlot("lora", core), ClipSlot("full", core)
    first = edit_of(lora)
    np.testing.assert_array_equal(first, references["lora"])
    assert adapters() > 0
    np.testing.assert_array_equal(edit_of(full_slot), references["full"])  # its own UNet copy
    np.testing.assert_array_equal(edit_of(lora), first)
    lora.close()  # evicted: its adapter leaves the base
    assert adapters() == 0 and lora.loaded is None
    np.testing.assert_array_equal(edit_of(full_slot), references["full"])
    full_slot.close()
    assert full_slot.loaded is None


def test_the_cluster_config_is_a_valid_serve_config():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from nrt.errors import InputError
    from nrt.service.settings import ServiceSettings

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "config.yaml").read_text()))
    [app] = config.applications
    assert app.import_path == "serve.app:app"
    editor = next(d for d in app.deployments if d.name == "Editor")
    assert editor.autoscaling_config["min_replicas"] >= 1 and editor.max_ongoing_requests == 1
    assert editor.max_queued_requests >= 1 and editor.ray_actor_options.num_gpus == 1
    assert ServiceSettings.from_env({**app.args, "api_token": "t"}, environ={}).host == "0.0.0.0"
    with pytest.raises(InputError, match="no API token"):
        ServiceSettings.from_env(app.args, environ={})


def test_settings_come_from_arguments_then_the_environment():
    from nrt.errors import InputError
    from nrt.service.settings import ServiceSettings

    environ = {"NRT_STORAGE": "s3://bucket/nrt", "NRT_MAX_UPLOAD_MB": "5", "NRT_API_TOKEN": "secret",
               "NRT_ALLOW_UNAUTHENTICATED": "no"}
    settings = ServiceSettings.from_env({"max_upload_mb": "7", "max_queued_requests": 4}, environ=environ)
    assert settings.storage == "s3://bucket/nrt" and settings.max_upload_bytes == 7_000_000
    assert settings.max_queued_requests == 4 and settings.host == "0.0.0.0" and settings.clap == "mini"
    assert "secret" not in repr(settings)
    assert ServiceSettings.from_env(environ={}).host == "127.0.0.1"
    for args, message in [({"max_upload_mb": "lots"}, "not a valid float"), ({"colour": "red"}, "unknown setting"),
                          ({"min_replicas": "2", "max_replicas": "1"}, "max_replicas"),
                          ({"host": "0.0.0.0"}, "no API token")]:
        with pytest.raises(InputError, match=message):
            ServiceSettings.from_env(args, environ={})
