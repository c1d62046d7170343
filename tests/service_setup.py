"""What the tests of the HTTP service share: a tiny fit saved as a bundle, its registry entry as
the sweep publishes it, and serve/app.py's application on a local Ray with 2 CPUs, Serve on a
free loopback port."""

import contextlib
import importlib.util
import json
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from nrt.storage import Storage, bundle_rel
from tests.conftest import write_tone_clip

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-4f1c"
BEST = {"eta": 0.5, "steps": 3, "guidance": 2.0, "scheduler": "ddpm", "seed": 0}
RATE, CHANNELS = 22050, 2  # not the model's 16 kHz mono: the edit must come back like the input


def load_module(name: str, path: Path):
    """A script of the repository (serve/app.py, serve/load.py) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(storage: Storage, clip_id: str, source: Path, prompt: str, best: dict = BEST, model: str = "tiny") -> dict:
    """Put a bundle where the sweep puts it and return its registry entry (to publish, the JSON last)."""
    key = "lora-test0000000"
    rel = bundle_rel(clip_id, key)
    shutil.copytree(source, storage.local_path(rel))
    meta = json.loads((source / "bundle.json").read_text())
    storage.put_file(source / meta["input"]["file"], f"clips/{clip_id}/input.flac")
    return {
        "clip_id": clip_id, "edit_type": "addition", "target_prompt": prompt, "mask": None,
        "input": f"clips/{clip_id}/input.flac", "model": model, "dtype": "fp32", "bundle": rel, "fit_key": key,
        "fit": meta["fit"], "best": dict(best),
        "scores": {"text": 0.1, "audio": 0.9, "sum": 1.0, "clap": "tiny"},
        "trials": {"run": 2, "done": 2, "failed": 0}, "search": {"eta": "0:1"},
        "files": [f"{rel}/bundle.json"],
    }


def fit_tiny_bundle(directory: Path, model: str = "tiny") -> Path:
    """One LoRA fit of a 22.05 kHz stereo beep on a toy ``model``, saved as a bundle in ``directory``."""
    from nrt.audio import load_audio
    from nrt.backbones import load_backbone
    from nrt.bundle import save_bundle
    from nrt.edit import prepare_input
    from nrt.fit import fit
    from nrt.settings import FitConfig

    wav = write_tone_clip(directory / "beep.wav", rate=RATE, channels=CHANNELS)
    backbone = load_backbone(model, device="cpu")
    clip = load_audio(wav)
    result = fit(backbone, prepare_input(backbone, clip).wave, "a beep with a dog barking",
                 FitConfig(embed_steps=3, embed_lr=0.05, tune_steps=3), progress=False)
    return save_bundle(directory / "bundle", result, backbone.info, clip, target_prompt="a beep with a dog barking")


@contextlib.contextmanager
def running_service(settings: dict) -> Iterator[str]:
    """Ray, Serve on a free loopback port and the app built by serve/app.py's builder with
    ``settings``; yields the service's URL, and stops Serve and Ray after."""
    import ray
    from ray import serve

    from nrt.runtime import connect

    connect(num_cpus=2)  # as the service starts a local Ray, with its time for Serve's proxy to start
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        builder = load_module("serve_app", ROOT / "serve" / "app.py")
        serve.run(builder.app(settings), name="nrt", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
