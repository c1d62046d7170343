"""The sweep's driver side loads neither torch nor the models' libraries.

Every Ray process that unpickles a function imports its module: a clip's driver task, the fit
coordinator and the progress board import the sweep's modules, and ``tune/sweep.py`` imports
the settings. Importing torch, diffusers, transformers and peft costs about 10 s of CPU per
process on a 2-core machine, so only the processes that fit, edit or score may pay it.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "peft", "librosa")

PROBE = """
import importlib.util, json, sys
import nrt.clap_notes, nrt.defaults, nrt.settings, nrt.storage, nrt.manifest
import nrt.sweep, nrt.sweep.search, nrt.sweep.fits, nrt.sweep.trials, nrt.sweep.progress, nrt.sweep.failures
spec = importlib.util.spec_from_file_location("sweep_script", "tune/sweep.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
config = script.sweep_config(script.build_parser().parse_args(["--smoke-test", "--method", "full", "lora"]))
line = nrt.clap_notes.describe_clap(config.clap)
heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in %r)
driver = heavy()
import nrt.sweep.fitted  # what a trial runs in, which must load them
print(json.dumps({"loaded": driver, "fits": len(config.fits), "line": line, "worker": heavy()}))
"""


def test_the_sweep_driver_side_imports_no_model_library_and_the_worker_side_does() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"the driver side loaded {report['loaded'][:10]}"
    assert report["fits"] == 2 and report["line"].startswith("CLAP: nrt-mini's own small CLAP")
    # the check above can fail: the module a trial runs in does load the models' stack
    assert set(HEAVY[:4]) <= set(report["worker"]), report["worker"]
