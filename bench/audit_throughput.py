"""Audit throughput per stage on a generated demo export, and the cost of a rerun.

Prints, for N organic accounts plus the two planted networks: seconds and accounts/s per stage
on the first run, the same on a rerun of the same run key (embeddings and scores cached, rows
replaced), and the rerun/first ratio. Uses the embedded PostgreSQL in a temporary folder and the
tiny random-initialised backbone (the figures measure the pipeline, not a real model).

    .venv/bin/python bench/audit_throughput.py --organic 3000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_settings  # noqa: E402
from pipeline.core import runs
from pipeline.core.db import ensure_schema  # noqa: E402
from pipeline.scoring.train import train_probe  # noqa: E402
from pipeline.stages import RunContext, run_all  # noqa: E402
from pipeline.testing.demo import make_demo_export, make_labelled_set  # noqa: E402


def timed_run(settings, export: Path, run_key: str, detector_id: str) -> dict[str, float]:
    """Every stage of the stage table, timed, in this process."""
    params = settings.network
    runs.start_run(settings, run_key, str(export), "generic", settings.policy().threshold_params())
    seconds: dict[str, float] = {}

    def record(name: str, result, took: float) -> None:
        seconds[name] = took
        if name == "score":
            seconds["forward_passes"] = result["embedded"]

    run_all(RunContext(settings, run_key, params, detector_id), on_stage=record, record=False)
    runs.finish_run(settings, run_key, {})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organic", type=int, default=3000, help="organic accounts in the generated export")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(env={}, home=root / "home")
        ensure_schema(settings)
        print(f"generating {args.organic} organic accounts + 40 planted ...", flush=True)
        export, _ = make_demo_export(root / "export", organic=args.organic)
        real, fake = make_labelled_set(root / "training", per_class=200)
        trained = train_probe(settings, real, fake)
        accounts = args.organic + 40 + 1
        first = timed_run(settings, export, "bench", trained.detector_id)
        second = timed_run(settings, export, "bench", trained.detector_id)
        print(f"\n{'stage':<16}{'first s':>10}{'acc/s':>12}{'rerun s':>10}{'rerun/first':>13}")
        for name in [k for k in first if k != "forward_passes"]:
            ratio = second[name] / first[name] if first[name] else float("nan")
            print(f"{name:<16}{first[name]:>10.2f}{accounts / first[name]:>12.0f}{second[name]:>10.2f}{ratio:>13.2f}")
        total_first = sum(v for k, v in first.items() if k != "forward_passes")
        total_second = sum(v for k, v in second.items() if k != "forward_passes")
        print(f"{'total':<16}{total_first:>10.2f}{accounts / total_first:>12.0f}{total_second:>10.2f}"
              f"{total_second / total_first:>13.2f}")
        print(f"forward passes: first {int(first['forward_passes'])}, rerun {int(second['forward_passes'])}")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
