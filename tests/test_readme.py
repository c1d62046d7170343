"""Every command the README shows exists, with the flags it shows."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from nrt.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def _commands(prefix: str) -> list[list[str]]:
    """Command lines starting with ``prefix`` in the README's bash blocks (joined continuations)."""
    lines = []
    for block in BLOCKS:
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in command.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith(prefix):
                    lines.append(shlex.split(part))
    return lines


def _sweep_parser():
    spec = importlib.util.spec_from_file_location("sweep_main", ROOT / "tune" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def test_the_first_screen_has_the_two_commands():
    first_screen = README[: README.index("## The method")]
    assert "pip install torch==2.13.0" in first_screen and "python tune/sweep.py" in first_screen
    [test_command] = re.findall(r"python -m pytest[^\n]*", first_screen)
    assert test_command == "python -m pytest -q -n 2"
    assert f"{test_command} " in (ROOT / ".ci" / "run").read_text()  # CI runs the README's command


@pytest.mark.parametrize("argv", _commands("nrt "), ids=lambda a: " ".join(a[:2]))
def test_nrt_commands_parse(argv):
    # placeholders (IN.wav, BUNDLE, ...) parse as strings; what matters is subcommand and flags
    args = build_parser().parse_args([a.rstrip(".") for a in argv[1:] if a not in ("[--json]",)])
    assert args.command == argv[1]


@pytest.mark.parametrize("argv", _commands("python tune/sweep.py"), ids=lambda a: " ".join(a[2:4]))
def test_sweep_commands_parse(argv):
    _sweep_parser().parse_args(argv[2:])


def test_readme_shows_each_subcommand():
    shown = {argv[1] for argv in _commands("nrt ")}
    assert shown == set(build_parser()._subparsers._group_actions[0].choices)
