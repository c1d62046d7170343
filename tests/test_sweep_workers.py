"""The README's sweep as users run it: nrt-mini, its CLAP and onset scoring in real Tune trials in
Ray workers, on a Ray the script starts and on a Ray head that ``ray job submit`` reaches.

Each run points numba's cache at an empty folder and checks that no worker wrote to it: librosa's
numba kernels, compiled with ``cache=True`` by fresh processes at once, leave cache files that
crash every later worker with SIGSEGV (see ``nrt/spectrogram.py``).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nrt.storage import Storage, read_registry_entry
from tests.conftest import HANG_SECONDS

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE_IDS = [row["id"] for row in csv.DictReader((ROOT / "examples" / "manifest.csv").open())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(numba_cache: Path) -> dict[str, str]:
    """This interpreter's environment, with its scripts first on PATH, no Ray address inherited
    and numba's cache in ``numba_cache``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(NUMBA_CACHE_DIR=str(numba_cache), RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
    return env


def _assert_every_example_done(
    root: Path, numba_cache: Path, output: str, clip_ids: list[str] = EXAMPLE_IDS, trials: int = 2
) -> None:
    storage = Storage(root)
    for clip_id in clip_ids:
        entry = read_registry_entry(storage, clip_id)
        assert entry is not None, f"no registry entry for {clip_id}:\n{output[-4000:]}"
        assert entry["trials"]["failed"] == 0 and entry["trials"]["done"] == entry["trials"]["run"] == trials
        assert storage.read_json(f"status/{clip_id}.json")["state"] == "done"
        assert entry["scores"]["clap"] == "mini" and "onset_f1" in entry["scores"]
    written = sorted(str(p.relative_to(numba_cache)) for p in numba_cache.rglob("*") if p.is_file())
    assert written == [], f"Ray workers compiled numba code into its cache: {written}"


def _finished_trials(root: Path) -> set[str]:
    """Trials that Tune's experiment checkpoints under ``root`` record as finished."""
    finished = set()
    for path in root.glob("tune/*/*/experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # being written
            continue
        for data, _ in state.get("trial_data", []):
            trial = json.loads(data)
            if trial.get("status") == "TERMINATED":
                finished.add(trial["trial_id"])
    return finished


@pytest.mark.slow
def test_the_readme_sweep_killed_and_resumed_finishes_every_clip_and_refits_nothing(tmp_path: Path) -> None:
    """The README's sweep on the example clips, with the local Ray it starts: killed (driver and
    Ray) once a trial has finished, then run again with --resume to the end."""
    numba_cache = tmp_path / "numba"
    numba_cache.mkdir()
    root = tmp_path / "results"
    env = _environment(numba_cache)
    command = [sys.executable, "tune/sweep.py", "--smoke-test", "--storage", str(root), "--concurrent-trials", "1"]
    current = Path("/tmp/ray/ray_current_cluster")
    current_before = current.read_text() if current.exists() else None
    driver = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # killed once Tune has checkpointed a finished trial: fits done, experiments part way
        deadline = time.time() + HANG_SECONDS
        while time.time() < deadline and not _finished_trials(root):
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.5)
        finished_before = _finished_trials(root)
        assert finished_before, "no trial finished in time"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    if current.exists() and current.read_text() != current_before:  # left by the Ray just killed
        current.unlink()
    attempts_before = sorted(str(p) for p in root.glob("fits/*/*/*.json"))
    assert len(attempts_before) == len(EXAMPLE_IDS)

    done = subprocess.run([*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True,
                          start_new_session=True, timeout=HANG_SECONDS)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    _assert_every_example_done(root, numba_cache, output)
    assert f"{len(EXAMPLE_IDS)} clip(s) in" in done.stdout and "fits computed 0" in done.stdout
    assert sorted(str(p) for p in root.glob("fits/*/*/*.json")) == attempts_before  # no fit ran again
    storage = Storage(root)
    trial_ids = set()
    for clip_id in EXAMPLE_IDS:
        rows = csv.DictReader(storage.read_bytes(f"registry/{clip_id}.trials.csv").decode().splitlines())
        trial_ids |= {r["trial_id"] for r in rows}
    assert finished_before <= trial_ids  # the experiments were restored, not started over


class RayHead:
    """``ray start --head`` on loopback in a process group of its own, with its own temporary
    folder (so ``/tmp/ray/ray_current_cluster`` is not touched), stopped by killing that group."""

    def __init__(self, env: dict[str, str]) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="nrt-ray-", dir="/tmp"))  # short: Ray's socket paths
        self.dashboard = _free_port()
        command = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(_free_port()),
                   "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard),
                   "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
                   "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(self.temp), "--disable-usage-stats"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = self.process.communicate()
        if self.process.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{output[-3000:]}")

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def stop(self) -> None:
        group = self.process.pid  # every process the head started keeps this group
        # a few seconds to stop cleanly (some of Ray's processes never answer SIGTERM), then killed
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 20)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + grace
            while time.time() < deadline and _group_alive(group):
                time.sleep(0.2)
        subprocess.run(["rm", "-rf", str(self.temp)], check=False)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_cluster_path_ray_job_submit_finishes_every_clip(tmp_path: Path) -> None:
    """``ray job submit`` of the README's sweep to a ``ray start`` head, cut to one clip and one
    trial: the test above runs the whole of it on the local Ray."""
    numba_cache = tmp_path / "numba"
    numba_cache.mkdir()
    root = tmp_path / "results"
    env = _environment(numba_cache)
    with (ROOT / "examples" / "manifest.csv").open() as rows:
        first = next(csv.DictReader(rows))
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(first))
        writer.writeheader()
        writer.writerow({**first, "audio": str(ROOT / "examples" / first["audio"])})
    current = Path("/tmp/ray/ray_current_cluster")
    current_before = current.read_text() if current.exists() else None
    head = RayHead(env)
    try:
        done = subprocess.run(
            ["ray", "job", "submit", "--address", head.address, "--working-dir", ".", "--",
             "python", "tune/sweep.py", "--smoke-test", "--storage", str(root), "--manifest", str(manifest),
             "--trials", "1"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_SECONDS,
        )
    finally:
        head.stop()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    _assert_every_example_done(root, numba_cache, output, EXAMPLE_IDS[:1], trials=1)
    assert (current.read_text() if current.exists() else None) == current_before
    assert not head.temp.exists()


# -- a sweep whose every trial crashes ----------------------------------------------------------
def test_a_worker_death_names_the_signal_the_frame_and_the_log(tmp_path: Path) -> None:
    from nrt.sweep.failures import crash_summary

    log = tmp_path / "worker-abc-01000000-2440.err"
    log.write_text(
        ":actor_name:edit_trial.beeps-gap.lora-93bb94a17eda\n"
        "*** SIGSEGV received at time=1796175392 on cpu 1 ***\n"
        "Fatal Python error: Segmentation fault\n"
        "Stack (most recent call first):\n"
        '  File "/venv/site-packages/numba/np/ufunc/gufunc.py", line 263 in __call__\n'
        '  File "/venv/site-packages/librosa/util/utils.py", line 1352 in peak_pick\n'
        '  File "/repo/nrt/onsets.py", line 119 in detect_onsets\n'
        '  File "/repo/nrt/scoring.py", line 109 in _onsets\n'
        "Extension modules: numpy._core._multiarray_umath (total: 1)\n"
    )
    assert crash_summary(log) == (
        'Fatal Python error: Segmentation fault, in File "/venv/site-packages/numba/np/ufunc/gufunc.py", line 263 '
        'in __call__ called from File "/repo/nrt/onsets.py", line 119 in detect_onsets'
    )
    killed = tmp_path / "worker-def-01000000-77.err"
    killed.write_text(":actor_name:ImplicitFunc\nLoading weights: 100%\n")
    assert "out-of-memory killer" in crash_summary(killed)


@pytest.mark.slow
def test_a_sweep_whose_trials_all_crash_stops_early_and_says_why(tmp_path: Path) -> None:
    import ray

    from nrt.sweep import run_sweep
    from nrt.sweep.search import Work
    from tests.conftest import smoke_config, write_manifest, write_tone_clip

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def fit(storage, job, fit, key, model, dtype, device) -> dict:
        return {"bundle": f"bundles/{job.clip_id}/{key}", "computed": True}

    def crashing_trial(config, job) -> None:  # a worker that dies in native code, every time
        (attempts / f"{os.getpid()}-{time.time_ns()}").touch()
        os.kill(os.getpid(), signal.SIGSEGV)

    write_tone_clip(tmp_path / "beep.wav")
    manifest = write_manifest(tmp_path, [("beep", "addition", "beep.wav", "a beep with a dog barking")])
    config = smoke_config(tmp_path / "root", trials=6, max_retries=2)
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="nrt", log_to_driver=False)
    try:
        result = run_sweep(manifest, config, work=Work(fit=ray.remote(fit), trainable=crashing_trial))
    finally:
        ray.shutdown()

    [row] = result.rows
    assert row["status"] == "failed"
    # without the guard: 6 trials x 3 attempts; with it, the first two (a third may have started)
    assert 2 <= len(list(attempts.iterdir())) <= 3
    error = row["error"]
    assert "the first 2 trial attempts failed and none finished" in error and "stopped rather than retried" in error
    assert "the worker process (pid" in error
    assert "Segmentation fault" in error or "SIGSEGV" in error
    log = Path(error.rsplit("its log: ", 1)[1])
    assert log.name.endswith(".err") and log.is_file()
