"""The storage root and the registry: atomic writes, and readers that never take a partial entry."""

import json

import pytest

from nrt.errors import InputError, NrtError
from nrt.storage import (
    Storage,
    bundle_ready,
    list_registry,
    read_registry_entry,
    registry_rel,
    write_registry_entry,
)


def _entry(clip_id: str, files: list[str]) -> dict:
    return {"clip_id": clip_id, "bundle": f"bundles/{clip_id}/k", "best": {"eta": 0.5}, "files": files}


def test_local_writes_are_renamed_into_place(tmp_path):
    storage = Storage(tmp_path / "root")
    storage.write_json("a/b.json", {"x": 1})
    storage.write_bytes("a/b.json", b'{"x": 2}')
    assert storage.read_json("a/b.json") == {"x": 2}
    assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["b.json"]  # no temporary left behind
    assert storage.list("a") == ["b.json"] and storage.list("missing") == []


def test_paths_cannot_leave_the_root(tmp_path):
    storage = Storage(tmp_path)
    with pytest.raises(InputError, match="leaves the storage root"):
        storage.write_bytes("../outside", b"x")
    with pytest.raises(InputError):
        registry_rel("../evil")


def test_registry_entry_needs_its_files_first(tmp_path):
    storage = Storage(tmp_path)
    with pytest.raises(NrtError, match="not written"):
        write_registry_entry(storage, _entry("c1", ["registry/c1.trials.png"]))
    assert not storage.exists("registry/c1.json")

    storage.write_bytes("registry/c1.trials.png", b"png")
    write_registry_entry(storage, _entry("c1", ["registry/c1.trials.png"]))
    entry = read_registry_entry(storage, "c1")
    assert entry["best"] == {"eta": 0.5} and entry["format"] == "nrt-registry"
    assert [e["clip_id"] for e in list_registry(storage)] == ["c1"]


def test_readers_refuse_entries_with_missing_or_broken_parts(tmp_path):
    storage = Storage(tmp_path)
    storage.write_bytes("registry/c1.trials.png", b"png")
    write_registry_entry(storage, _entry("c1", ["registry/c1.trials.png"]))
    storage.remove("registry/c1.trials.png")  # as if the payload were lost
    assert read_registry_entry(storage, "c1") is None

    storage.write_bytes("registry/c2.json", b'{"format": "nrt-regis')  # not JSON
    assert read_registry_entry(storage, "c2") is None
    storage.write_json("registry/c3.json", {**_entry("c3", []), "format": "nrt-registry", "format_version": 99})
    assert read_registry_entry(storage, "c3") is None  # newer than this reader
    assert list_registry(storage) == []


def test_bundle_ready_only_when_every_listed_file_is_there(tmp_path):
    storage = Storage(tmp_path)
    storage.write_bytes("bundles/c/k/embeddings.safetensors", b"x")
    assert not bundle_ready(storage, "bundles/c/k")  # no bundle.json yet
    storage.write_json("bundles/c/k/bundle.json", {"files": ["embeddings.safetensors", "unet_lora.safetensors"]})
    assert not bundle_ready(storage, "bundles/c/k")
    storage.write_bytes("bundles/c/k/unet_lora.safetensors", b"x")
    assert bundle_ready(storage, "bundles/c/k")


def test_local_put_dir_swaps_the_whole_folder_in(tmp_path):
    storage = Storage(tmp_path / "root")
    for version, names in ((1, ("bundle.json", "old.bin")), (2, ("bundle.json", "new.bin"))):
        local = tmp_path / f"v{version}"
        local.mkdir()
        for name in names:
            (local / name).write_text(str(version))
        storage.put_dir(local, "bundles/c/k", index="bundle.json")
    assert storage.list("bundles/c/k") == ["bundle.json", "new.bin"]  # nothing of the old copy is left
    assert storage.read_bytes("bundles/c/k/bundle.json") == b"2"
    assert storage.list("bundles/c") == ["k"]  # no staging or old copy beside it


def test_object_store_gets_the_payload_first_and_the_index_last(tmp_path):
    storage = Storage(f"memory://nrt-test-{tmp_path.name}/root")
    assert not storage.is_local and storage.uri("registry") == f"memory://nrt-test-{tmp_path.name}/root/registry"
    order = []
    put_file = storage.fs.put_file

    def recording(lpath, rpath, **kwargs):
        order.append(rpath.rsplit("/", 1)[-1])
        return put_file(lpath, rpath, **kwargs)

    storage.fs.put_file = recording
    local = tmp_path / "bundle"
    local.mkdir()
    for name in ("unet_lora.safetensors", "bundle.json", "embeddings.safetensors", "input.flac"):
        (local / name).write_bytes(b"x")
    (local / "bundle.json").write_text(json.dumps({"files": ["embeddings.safetensors", "input.flac", "unet_lora.safetensors"]}))
    storage.put_dir(local, "bundles/c/k", index="bundle.json")
    assert order[-1] == "bundle.json" and sorted(order[:-1]) == ["embeddings.safetensors", "input.flac", "unet_lora.safetensors"]
    assert bundle_ready(storage, "bundles/c/k")

    fetched = storage.get_dir("bundles/c/k", tmp_path / "fetched")
    assert sorted(p.name for p in fetched.iterdir()) == sorted(order)


def test_remote_roots_need_a_known_scheme():
    with pytest.raises(InputError, match="s3://"):
        Storage("ftp://host/root")
