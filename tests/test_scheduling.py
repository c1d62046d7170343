"""The test scheduler of ``tests/conftest.py`` under ``-n 2``: a worker that crashes costs one
failed test, not the run, and each worker compiles numba code into a cache folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import HANG_SECONDS

ROOT = Path(__file__).resolve().parents[1]

# Each test notes the numba cache folder of the worker that runs it.
CONFTEST = """
import os
import time
from pathlib import Path

from tests.conftest import pytest_xdist_make_scheduler  # noqa: F401

def note_folder():
    Path("{out}", "folder-" + os.environ["PYTEST_XDIST_WORKER"]).write_text(os.environ["NUMBA_CACHE_DIR"])

def signal_and_wait(mark, wait_for=None):
    if mark:
        Path("{out}", mark).touch()
    deadline = time.time() + 120
    while wait_for and not Path("{out}", wait_for).exists() and time.time() < deadline:
        time.sleep(0.1)
"""

# The case where xdist's scheduler stalled. One worker takes test_a (three tests), the other test_b
# (which waits for the crash to begin) and test_c; the first takes test_d after test_before. The
# other worker finishes and shuts down while test_crash waits; at the crash, test_a's rest and
# test_d go to the worker that replaces the crashed one, which xdist topped up with one unit.
CRASHING = """
import os, signal, time
from conftest import note_folder, signal_and_wait

def test_before():
    note_folder()

def test_crash():
    signal_and_wait("crashing")
    time.sleep(3)
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after():
    note_folder()
"""

RUNNING = """
from conftest import note_folder, signal_and_wait

def test_b():
    note_folder()
    signal_and_wait(None, wait_for="crashing")
"""

QUICK = """
from conftest import note_folder

def test_quick():
    note_folder()
"""


def test_a_crashed_worker_fails_its_test_once_and_the_run_finishes(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    caches = tmp_path / "caches"
    caches.mkdir()
    (suite / "conftest.py").write_text(CONFTEST.format(out=caches))
    (suite / "test_a.py").write_text(CRASHING)
    (suite / "test_b.py").write_text(RUNNING)
    for name in ("c", "d"):
        (suite / f"test_{name}.py").write_text(QUICK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "-p", "no:faulthandler", str(suite)],
        cwd=suite, env=env, capture_output=True, text=True, timeout=HANG_SECONDS,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "1 failed, 5 passed" in output, output[-3000:]  # test_after ran, on a new worker
    assert "FAILED test_a.py::test_crash - worker" in output
    # each worker its own numba cache folder, the replacement worker included
    folders = {path.name: path.read_text() for path in caches.glob("folder-*")}
    assert len(folders) >= 2 and len(set(folders.values())) == len(folders), folders
    assert all("nrt-tests-numba-" in folder for folder in folders.values()), folders
