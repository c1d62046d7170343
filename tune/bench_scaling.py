"""How close N clips on G GPUs come to the ideal time, measured on this machine.

Ray pretends to have G GPUs and the work sleeps as a GPU stage would (a fit holds a whole GPU,
a trial a fraction), so what is measured is the sweep's scheduling: clip driver tasks, the fit
coordinator, one Tune experiment per clip. Ideal: every GPU-second spread over the G GPUs (or
one clip's own chain of fit and trials, if longer).

    python tune/bench_scaling.py                      # 8 clips on 4 GPUs
    python tune/bench_scaling.py --clips 16 --gpus 8 --fit-seconds 10 --trial-seconds 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray, reachable from this machine only
    from nrt.commandline import HelpFormatter
    from nrt.sweep.scaling import ScalingSetup, run_scaling

    d = ScalingSetup()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--clips", type=int, default=d.clips, help="clips N")
    p.add_argument("--gpus", type=int, default=d.gpus, help="stand-in GPUs G")
    p.add_argument("--fit-seconds", type=float, default=d.fit_seconds, help="one fit, on a whole GPU")
    p.add_argument("--trial-seconds", type=float, default=d.trial_seconds, help="one trial, on a GPU fraction")
    p.add_argument("--trials", type=int, default=d.trials, help="trials per clip")
    p.add_argument("--trial-gpus", type=float, default=d.trial_gpus, help="GPU fraction of a trial")
    p.add_argument("--concurrent-trials", type=int, default=d.concurrent_trials, help="trials of one clip at once")
    args = p.parse_args(argv)
    setup = ScalingSetup(
        args.clips,
        args.gpus,
        args.fit_seconds,
        args.trial_seconds,
        args.trials,
        args.trial_gpus,
        args.concurrent_trials,
    )
    start = time.time()
    print(
        f"{setup.clips} clips on {setup.gpus} stand-in GPUs: fit {setup.fit_seconds:g} s on a whole GPU, "
        f"{setup.trials} trials of {setup.trial_seconds:g} s on {setup.trial_gpus:g} GPU, "
        f"{setup.concurrent_trials} at once per clip",
        flush=True,
    )
    report = run_scaling(
        setup,
        on_progress=lambda line: (
            print(f"[{time.time() - start:6.1f} s] {line}", flush=True) if "done" in line or "FAILED" in line else None
        ),
    )
    print(f"\nGPU work          {report['gpu_seconds']:.1f} GPU-s (measured busy {report['busy_gpu_seconds']:.1f})")
    print(f"ideal time        {report['ideal_seconds']:.1f} s")
    print(f"measured time     {report['measured_seconds']:.1f} s")
    print(f"efficiency        {report['efficiency']:.0%} (ideal / measured)")
    print(f"GPU utilisation   {report['utilisation']:.0%} (busy GPU-s / (G x measured))")
    if report["failed"]:
        print(f"{report['failed']} clip(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
