"""What saving resumable training state costs: the train stage with and without it, side by side.

Every checkpoint of a run writes its model folder and, next to it, `step-N.trainer_state.pt`
(optimizer moments, schedule position, RNGs, log, the method's state). This runs the train
stage of `bench run --method M` (the embedded organism, default settings unless --preset smoke)
in one process, alternating runs *with* the state file and runs *without* it (the save
replaced by a no-op; the state dict is still assembled, which costs microseconds), and reports

  * the train stage's wall time, median over repeats, for both, and the difference as a share;
  * the time spent inside the state save itself, summed over the run's checkpoints, as a share
    of the train stage (measured directly: less noisy than the difference on a shared machine);
  * the state file's and the model folder's size per checkpoint.

Writes benchmarks/results/resume.md.

    OMP_NUM_THREADS=1 python benchmarks/bench_resume.py [--methods rps grpo] [--repeats 2] [--preset default]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "resume.md"


def train_once(method: str, preset: str, work: Path, with_state: bool) -> dict:
    """One train stage; returns its seconds, the seconds inside save_trainer_state and sizes."""
    import plasticity_bench.harness.app.stages.train as pipeline
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.organism import ensure_organism
    from plasticity_bench.harness.app.stages.prepare import metadata_of_run, prepare
    from plasticity_bench.harness.backends import BackendPool
    from plasticity_bench.harness.store import RunStore, read_manifest

    config = load_config(preset, overrides={"method": method})
    out = work / f"{method}-{'with' if with_state else 'without'}-{time.monotonic_ns()}"
    run = prepare(config, out)
    base = ensure_organism(run.config.organism, run.suite, quiet=True)
    store = RunStore.open_or_create(out, metadata_of_run(run, base), run.items)
    real_save = pipeline.save_trainer_state
    inside = {"seconds": 0.0, "saves": 0}

    def timed_save(state, path):
        started = time.perf_counter()
        real_save(state, path)
        inside["seconds"] += time.perf_counter() - started
        inside["saves"] += 1

    pipeline.save_trainer_state = timed_save if with_state else (lambda state, path: None)
    try:
        with BackendPool() as backends:
            started = time.perf_counter()
            pipeline.train_stage(store, run, base, backends, quiet=True)
            seconds = time.perf_counter() - started
    finally:
        pipeline.save_trainer_state = real_save
    last = read_manifest(store.checkpoints)[-1]
    states = sorted(store.checkpoints.glob("*.trainer_state.pt"))
    model_bytes = sum(f.stat().st_size for f in (store.root / last.path).iterdir())
    return {
        "seconds": seconds,
        "save_seconds": inside["seconds"],
        "saves": inside["saves"],
        "steps": config.steps,
        "checkpoints": len(read_manifest(store.checkpoints)) - 1,
        "state_bytes": states[-1].stat().st_size if states else 0,
        "model_bytes": model_bytes,
    }


def measure(method: str, preset: str, work: Path, repeats: int) -> dict:
    """REPEATS train stages of METHOD with and without the state file, alternating which goes first; one table row."""
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for repeat in range(repeats):
        for with_state in (False, True) if repeat % 2 == 0 else (True, False):  # alternate which goes first
            result = train_once(method, preset, work, with_state)
            runs[with_state].append(result)
            print(
                f"{method} {'with' if with_state else 'without'} state: {result['seconds']:.1f} s train stage, "
                f"{result['save_seconds']:.2f} s in {result['saves']} state saves",
                flush=True,
            )
    without = statistics.median(r["seconds"] for r in runs[False])
    with_ = statistics.median(r["seconds"] for r in runs[True])
    inside = statistics.median(r["save_seconds"] for r in runs[True])
    share_inside = statistics.median(r["save_seconds"] / r["seconds"] for r in runs[True])
    last = runs[True][-1]
    return {
        "method": method,
        "steps": last["steps"],
        "checkpoints": last["checkpoints"],
        "without": without,
        "with": with_,
        "difference": (with_ - without) / without,
        "inside": inside,
        "share_inside": share_inside,
        "per_save": inside / max(1, last["saves"]),
        "state_mb": last["state_bytes"] / 2**20,
        "model_mb": last["model_bytes"] / 2**20,
        "all_without": [round(r["seconds"], 1) for r in runs[False]],
        "all_with": [round(r["seconds"], 1) for r in runs[True]],
    }


def report_lines(args: argparse.Namespace, rows: list[dict], load_before, load_after, elapsed: float) -> list[str]:
    import torch

    lines = [
        "# Resumable training state: what saving it costs",
        "",
        f"Generated by `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} python benchmarks/bench_resume.py --methods {' '.join(args.methods)} "
        f"--repeats {args.repeats} --preset {args.preset}`. Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), no GPU; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average "
        f"{', '.join(f'{x:.2f}' for x in load_before)} at the start and {', '.join(f'{x:.2f}' for x in load_after)} at the end "
        "(other engineers' jobs shared the cores).",
        "",
        f"The train stage of `bench run --method M --preset {args.preset}` (in one process, no generation), alternating runs with the "
        "training-state file saved at every checkpoint and runs with that save replaced by a no-op. *Inside the save*: the time spent "
        "in `save_trainer_state` (torch.save to a temporary file + rename), summed over the run, measured directly in the runs with it.",
        "",
        "| method | steps | checkpoints | train stage without state (s) | with state (s) | difference | inside the save, per run (s) | share of the train stage | per save (ms) | state file (MB) | model folder (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['checkpoints']} | {r['without']:.1f} | {r['with']:.1f} | {100 * r['difference']:+.1f} % | "
            f"{r['inside']:.2f} | {100 * r['share_inside']:.2f} % | {1000 * r['per_save']:.0f} | {r['state_mb']:.1f} | {r['model_mb']:.1f} |"
        )
    lines += [
        "",
        "Every run's train stage (s): "
        + "; ".join(f"{r['method']} without {r['all_without']}, with {r['all_with']}" for r in rows)
        + ".",
        "",
        f"Whole benchmark: {elapsed / 60:.0f} min.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["rps", "grpo"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temporary one]")
    args = parser.parse_args()

    import torch  # noqa: F401  (loaded before the clock starts, as the runs load it)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        rows = [measure(method, args.preset, work, args.repeats) for method in args.methods]
    load_after = os.getloadavg()
    elapsed = time.time() - started
    lines = report_lines(args, rows, load_before, load_after, elapsed)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
