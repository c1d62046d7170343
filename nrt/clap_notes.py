"""Which CLAP a ``--clap`` value names, and what its scores can be compared with.

No model code: the sweep's drivers, the service and the command line say it beside their
numbers without loading torch.
"""

from __future__ import annotations

import os
from pathlib import Path

# Microsoft CLAP's releases by name, and the weight file of each release
MSCLAP_NAMES = {"msclap-2023": "2023", "msclap-2022": "2022"}
MSCLAP_WEIGHT_FILES = {"2023": "CLAP_weights_2023.pth", "2022": "CLAP_weights_2022.pth"}


def is_msclap(name: str | os.PathLike) -> bool:
    """Whether a ``--clap`` value names Microsoft CLAP: ``msclap-2023``, ``msclap-2022`` or a ``.pth``."""
    return str(name) in MSCLAP_NAMES or str(name).endswith(".pth")


def describe_msclap(name: str | os.PathLike) -> str:
    """The sentence shown beside scores from Microsoft CLAP."""
    how = (
        "nrt averages fixed windows where msclap crops long clips at random, and resamples with soxr, "
        "so the numbers can differ slightly from msclap's own"
    )
    shown = Path(str(name)).name if str(name).endswith(".pth") else str(name)
    if str(name) == "msclap-2023" or shown == MSCLAP_WEIGHT_FILES["2023"]:
        return f"CLAP: {shown} (Microsoft CLAP 2023, msclap's default): comparable with the paper's Table 1 ({how})."
    if str(name) == "msclap-2022" or shown == MSCLAP_WEIGHT_FILES["2022"]:
        return (
            f"CLAP: {shown} (Microsoft CLAP 2022, the model of the paper's reference [12]); Table 1 is taken "
            f"to use msclap's default 2023 release, so compare with care ({how})."
        )
    return f"CLAP: {shown} (Microsoft CLAP weights from a local file); comparable with Table 1 only if they are msclap 2023's."


def describe_clap(name: str | os.PathLike) -> str:
    """The sentence to show next to CLAP numbers, saying what they can be compared with."""
    if is_msclap(name):
        return describe_msclap(name)
    table1 = "the paper's Table 1 used Microsoft's CLAP"
    if str(name) == "mini":
        return (
            "CLAP: nrt-mini's own small CLAP, trained on nrt's generated scenes; it knows only their "
            f"sounds and words, and its scores are not comparable with LAION CLAP's or with Table 1 ({table1})."
        )
    if str(name) == "tiny":
        return (
            "CLAP: the built-in tiny model with random weights, for tests; its scores mean nothing "
            f"(and LAION CLAP scores are not comparable with Table 1 either: {table1})."
        )
    shown = Path(str(name)).name if str(name).endswith(".pt") else str(name)
    return f"CLAP: {shown} (LAION). Not comparable with the paper's Table 1 numbers: {table1}."
