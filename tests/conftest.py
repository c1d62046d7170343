import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# librosa's numba kernels are compiled with cache=True, into the installed package's folder by
# default. Two processes that compile them into one folder at once can leave cache files that do
# not belong together, and every process that loads them afterwards dies with SIGSEGV (numba issue
# 10128; reproduced here with two fresh processes in 1 of 12 tries). Under ``-n 2`` both workers
# run tests that call librosa (the parity tests), so each test process compiles into a folder of
# its own, set before numba is imported and inherited by the subprocesses it starts.
_NUMBA_CACHE = tempfile.mkdtemp(prefix="nrt-tests-numba-")
os.environ["NUMBA_CACHE_DIR"] = _NUMBA_CACHE
atexit.register(shutil.rmtree, _NUMBA_CACHE, True)
# OpenMP threads that spin while waiting make torch ten times slower or worse on a machine whose
# cores are busy; passive ones sleep. Set before torch loads, and inherited by every subprocess
# and Ray worker a test starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# How long a test waits for work (an edit, a job, a trial) before calling it a hang. Tests wait on
# a state, never on a budget sized for an idle machine: only a hang outlasts this.
HANG_SECONDS = float(os.environ.get("NRT_TEST_HANG_SECONDS", 900))


# Units of work under pytest-xdist (``-n 2``, the README's test command): a module each, so that
# its module fixtures are set up once, except the modules that start Ray. Those that start Ray in
# the test process (a cluster, Serve) are one unit, run one after another on one worker, and the
# sweeps through subprocesses and ``ray start`` heads another: at most two Ray clusters share the
# machine's cores. The Ray units, the longest, are handed out first.
RAY_UNITS = {
    "test_page.py": "ray", "test_s3.py": "ray", "test_serve.py": "ray", "test_sweep.py": "ray",
    "test_sweep_workers.py": "ray-subprocesses",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") == "each":
        return None

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return RAY_UNITS.get(module.rsplit("/", 1)[-1], module)

        def _assign_work_unit(self, node) -> None:
            waiting = [unit for unit in dict.fromkeys(RAY_UNITS.values()) if unit in self.workqueue]
            if waiting:
                self.workqueue.move_to_end(waiting[0], last=False)  # the next unit handed out
            super()._assign_work_unit(node)

        def _reschedule(self, node) -> None:
            # An xdist worker holds its last test until it is sent another or told to shut down.
            # xdist tops a node up one unit at a time, so a worker that starts late (one replacing
            # a crashed worker) could be left holding a single test while units wait: topped up
            # here until it has two tests or the queue is empty (when it is told to shut down).
            super()._reschedule(node)
            while not node.shutting_down and self._pending_of(self.assigned_work[node]) < 2:
                super()._reschedule(node)

        def remove_node(self, node) -> str | None:
            # xdist's scope schedulers hand a crashed worker's unit to the next worker with the
            # test that crashed it still pending: it crashes that worker too, and the next, until
            # the run hangs. The test is reported failed once and the rest of its unit runs.
            workload = self.assigned_work.pop(node)
            pending = [nodeid for unit in workload.values() for nodeid, done in unit.items() if not done]
            if not pending:
                return None
            crashed = pending[0]  # a worker runs its units' tests in order
            for scope, unit in workload.items():
                if crashed in unit:
                    unit[crashed] = True  # reported, not run again
                if not all(unit.values()):
                    self.workqueue[scope] = unit
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    return ModuleScheduling(config, log)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep what nrt builds on first use (tiny models) out of the user's cache."""
    if "NRT_CACHE" not in os.environ:
        os.environ["NRT_CACHE"] = str(tmp_path_factory.mktemp("nrt-cache"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny TANGO-layout model (v-prediction), written once per session."""
    from nrt.backbones.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_eps_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny model with an epsilon-prediction scheduler."""
    from nrt.backbones.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny-eps"), prediction_type="epsilon")


@pytest.fixture()
def backbone(tiny_dir):
    """A fresh tiny backbone on the CPU (fresh: tests may add adapters to its UNet)."""
    from nrt.backbones import load_backbone

    return load_backbone(str(tiny_dir), device="cpu")


def write_tone_clip(path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16"):
    """A beep over noise, deterministic, written with soundfile; returns the path."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 660 * t) * (t < seconds / 2) + 0.05 * rng.standard_normal(len(t))
    data = np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    sf.write(path, data, rate, subtype=subtype)
    return path


def write_manifest(directory, rows):
    """A sweep manifest of ``(id, edit_type, audio, target_prompt)`` rows in ``directory``."""
    import csv

    path = directory / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "edit_type", "audio", "target_prompt"])
        writer.writerows(rows)
    return path


SMOKE_FITS = {"embed_steps": 3, "tune_steps": 3}


def smoke_config(storage, **changes):
    """A sweep of three fit steps and two three-step trials a clip; ``changes`` override."""
    from nrt.settings import FitConfig
    from nrt.sweep import SweepConfig, parse_param

    settings = {
        "storage": str(storage), "fits": (FitConfig(**SMOKE_FITS),), "trials": 2, "max_retries": 1,
        "concurrent_trials": 1, "space": {"steps": parse_param("steps", "3"), "eta": parse_param("eta", "0:1")},
    }
    return SweepConfig(**{**settings, **changes})


@pytest.fixture()
def tone_wav(tmp_path):
    return write_tone_clip(tmp_path / "tone.wav")
