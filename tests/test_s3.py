"""A storage root on S3, spoken to over HTTP: a local S3 server (moto) stands in for AWS.

The same code path as on a cluster: pyarrow's S3 filesystem (or s3fs where installed) with
``AWS_ENDPOINT_URL`` pointing at the server. A whole sweep writes its bundles, registry and
tables there from Ray workers, and the service's editor edits from what it wrote.
"""

import csv
import io
import logging
import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from nrt.storage import (
    Storage,
    bundle_ready,
    fetch_dir,
    list_registry,
    read_registry_entry,
    write_registry_entry,
)
from tests.conftest import smoke_config, write_manifest, write_tone_clip

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "nrt-test"


@pytest.fixture(scope="module")
def s3_bucket():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # before Ray starts, so that its workers inherit them
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _objects(prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_storage_reads_and_writes_objects(s3_bucket, tmp_path):
    storage = Storage(f"{s3_bucket}/unit")
    assert not storage.is_local
    storage.write_json("status/a.json", {"state": "done"})
    assert storage.read_json("status/a.json") == {"state": "done"}
    assert _objects("unit/") == ["unit/status/a.json"]  # a real object, where S3 clients see it
    assert storage.exists("status/a.json") and not storage.exists("status/b.json")

    local = tmp_path / "bundle"
    local.mkdir()
    for name in ("embeddings.safetensors", "input.flac"):
        (local / name).write_bytes(name.encode())
    (local / "bundle.json").write_text('{"files": ["embeddings.safetensors", "input.flac"]}')
    assert not bundle_ready(storage, "bundles/c/k")
    storage.put_dir(local, "bundles/c/k", index="bundle.json")
    assert bundle_ready(storage, "bundles/c/k")
    fetched = fetch_dir(storage, "bundles/c/k", "bundle.json")
    assert (fetched / "input.flac").read_bytes() == b"input.flac"

    entry = {"clip_id": "c", "bundle": "bundles/c/k", "best": {"eta": 0.5}, "files": []}
    write_registry_entry(storage, entry)
    assert read_registry_entry(storage, "c")["best"] == {"eta": 0.5}
    assert [e["clip_id"] for e in list_registry(storage)] == ["c"]
    storage.remove("status/a.json")
    assert not storage.exists("status/a.json")


@pytest.mark.slow
def test_a_sweep_writes_to_s3_and_the_editor_edits_from_it(s3_bucket, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("optuna")
    from nrt.service.editor import ClipSlot, EditJob, EditorCore
    from nrt.service.settings import ServiceSettings
    from nrt.sweep import run_sweep

    write_tone_clip(tmp_path / "beep.wav")
    manifest = write_manifest(tmp_path, [("beep", "addition", "beep.wav", "a beep with a dog barking")])
    root = f"{s3_bucket}/sweep"
    config = smoke_config(root, model="tiny", clap="tiny")
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="nrt-s3", log_to_driver=False)
    try:
        result = run_sweep(manifest, config, poll_seconds=0.5)
    finally:
        ray.shutdown()
    assert [(r["clip_id"], r["status"]) for r in result.rows] == [("beep", "done")]

    storage = Storage(root)
    entry = read_registry_entry(storage, "beep")
    assert entry is not None and entry["trials"] == {"run": 2, "done": 2, "failed": 0}
    assert bundle_ready(storage, entry["bundle"])
    keys = _objects("sweep/")
    assert "sweep/registry/beep.json" in keys and f"sweep/{entry['bundle']}/bundle.json" in keys
    table = list(csv.DictReader(storage.read_bytes("results.csv").decode().splitlines()))
    assert [(r["clip_id"], r["status"]) for r in table] == [("beep", "done")]

    core = EditorCore(ServiceSettings(storage=root, model="tiny"), device="cpu")
    job = EditJob(bundle=entry["bundle"], eta=0.5, steps=3, guidance=2.0, scheduler="ddpm", seed=0, subtype="FLOAT")
    audio, rate = sf.read(io.BytesIO(core.edit(ClipSlot("beep", core), job)["audio"]), dtype="float32")
    source, source_rate = sf.read(tmp_path / "beep.wav", dtype="float32")
    assert rate == source_rate and len(audio) == len(source) and np.isfinite(audio).all()
