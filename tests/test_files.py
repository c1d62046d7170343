"""Atomic files and directories: a reader finds the old version or the new one, never a part or nothing."""

import sys
import threading
from pathlib import Path

import pytest

import nrt.files
from nrt.files import exchange, replace_dir, staging_dir, swap_dir
from nrt.hub import ensure_dir

PAYLOAD_LINES = 2000  # a file large enough that a read spans many pages


def _fill(directory: Path, version: int) -> None:
    (directory / "payload").write_text(f"{version}\n" * PAYLOAD_LINES)
    (directory / "index").write_text(str(version))


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(params=["exchange", "aside"])
def way(request, monkeypatch):
    """Each test runs with the exchange (where this machine has it) and with the portable fallback."""
    if request.param == "aside":
        monkeypatch.setattr(nrt.files, "exchange", lambda first, second: False)
    elif not _can_exchange():
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    return request.param


def _can_exchange() -> bool:
    return sys.platform.startswith("linux") and nrt.files._renameat2() is not None


def test_a_new_directory_appears_whole(tmp_path, way):
    target = tmp_path / "out" / "model"
    assert replace_dir(target, lambda d: _fill(d, 1)) == target
    assert (target / "index").read_text() == "1"
    assert _hidden(target.parent) == []  # no staging left behind


def test_an_existing_directory_is_replaced_and_removed(tmp_path, way):
    target = tmp_path / "model"
    replace_dir(target, lambda d: _fill(d, 1))
    (target / "stale").write_text("only in the old one")
    replace_dir(target, lambda d: _fill(d, 2))
    assert sorted(p.name for p in target.iterdir()) == ["index", "payload"]
    assert (target / "index").read_text() == "2"
    assert _hidden(tmp_path) == []  # neither the staging nor the old copy is left


def test_a_failed_write_leaves_the_old_directory(tmp_path, way):
    target = tmp_path / "model"
    replace_dir(target, lambda d: _fill(d, 1))

    def fail(directory: Path) -> None:
        _fill(directory, 2)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_dir(target, fail)
    assert (target / "index").read_text() == "1"
    assert _hidden(tmp_path) == []


def test_a_file_in_the_way_is_replaced(tmp_path, way):
    target = tmp_path / "model"
    target.write_text("not a directory")
    replace_dir(target, lambda d: _fill(d, 1))
    assert target.is_dir() and (target / "index").read_text() == "1"
    assert _hidden(tmp_path) == []


def test_staging_is_removed_when_not_swapped(tmp_path):
    with staging_dir(tmp_path / "model") as staging:
        assert staging.is_dir() and staging.parent == tmp_path and staging.name.startswith(".")
        assert staging.stat().st_mode & 0o777 == 0o755
        _fill(staging, 1)
    assert list(tmp_path.iterdir()) == []


def test_swap_of_a_missing_staging_directory_names_it(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError):
        swap_dir(tmp_path / "nowhere", tmp_path / "model")


@pytest.mark.skipif(not _can_exchange(), reason="renameat2(RENAME_EXCHANGE) is not available here")
def test_exchange_swaps_two_names(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.write_text("b")
    (first / "x").write_text("a")
    assert exchange(first, second)
    assert first.read_text() == "b" and (second / "x").read_text() == "a"
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "missing", first)


@pytest.mark.skipif(not _can_exchange(), reason="renameat2(RENAME_EXCHANGE) is not available here")
def test_a_reader_never_misses_the_directory_during_swaps(tmp_path):
    """A reader polls the target while it is replaced again and again: every open finds a whole copy."""
    target = tmp_path / "model"
    replace_dir(target, lambda d: _fill(d, 0))
    stop = threading.Event()
    seen = {"reads": 0, "missing": 0, "torn": 0, "versions": set()}

    def read() -> None:
        while not stop.is_set():
            try:
                lines = (target / "payload").read_text().splitlines()
            except FileNotFoundError:
                seen["missing"] += 1
                continue
            if len(lines) != PAYLOAD_LINES or len(set(lines)) != 1:
                seen["torn"] += 1
            seen["versions"].add(lines[0] if lines else None)
            seen["reads"] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        swaps = 0
        # swap until the reader has read through many swaps (a state, not a time budget)
        while swaps < 200 or seen["reads"] < 200 or len(seen["versions"]) < 20:
            swaps += 1
            replace_dir(target, lambda d, v=swaps: _fill(d, v))
            assert swaps < 100_000, f"the reader made {seen['reads']} reads in {swaps} swaps"
    finally:
        stop.set()
        reader.join()
    assert seen["missing"] == 0 and seen["torn"] == 0, seen
    assert (target / "index").read_text() == str(swaps)
    assert _hidden(tmp_path) == []


def test_ensure_dir_writes_once_and_keeps_a_complete_copy(tmp_path):
    target = tmp_path / "cache" / "model"
    calls = []

    def write(directory: Path) -> None:
        calls.append(directory)
        _fill(directory, len(calls))

    assert ensure_dir(target, write, "index") == target
    assert ensure_dir(target, write, "index") == target
    assert len(calls) == 1 and (target / "index").read_text() == "1"


def test_ensure_dir_replaces_an_incomplete_copy_and_yields_to_a_finished_one(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "partial").write_text("no marker")
    ensure_dir(target, lambda d: _fill(d, 1), "index")
    assert sorted(p.name for p in target.iterdir()) == ["index", "payload"]

    other = tmp_path / "raced"

    def lose_the_race(directory: Path) -> None:
        _fill(directory, 2)
        replace_dir(other, lambda d: _fill(d, 1))  # another writer finishes first

    ensure_dir(other, lose_the_race, "index")
    assert (other / "index").read_text() == "1"
    assert _hidden(tmp_path) == []


def test_write_json_is_atomic_and_holds_no_nan(tmp_path):
    import json
    import math

    from nrt.files import write_json

    path = write_json(tmp_path / "deep" / "x.json", {"a": math.nan, "b": [1.0, math.inf], "c": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": None, "b": [1.0, None], "c": "é"}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left beside it
