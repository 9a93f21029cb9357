"""A 13-checkpoint sweep scored by one and by two generation engines (`bench eval --engines N`).

Through the real CLI:

  1. one `bench run` (the default organism, SFT, 12 steps, a checkpoint every step: checkpoints
     0..12) gives the sweep (its own evaluation, cut to `--limit 1`, may be interrupted: only the
     checkpoints are used);
  2. `bench eval` of those 13 checkpoints on the micro suite (`--limit LIMIT` items per set),
     with `--engines 1` and `--engines 2`, per backend, in fresh folders, alternating which goes
     first on each repeat;
  3. every generation file, records.parquet and aggregates.parquet compared byte for byte.

Where the time goes: the generate stage's wall time (run.json), and for N engines what each engine
reports (run.json's `engine_timings`: start = process start to ready, including imports and, for
vLLM, the engine's own start; load = weights swapped in; generate; checkpoints done). The model:

    T(1) ≈ S1 + 13 · (w + g)          T(N) ≈ P + S + ceil(13 / N) · (w + g) · c

with S1 the in-process engine start (0 for hf, ~30 s for vLLM), P the engine process's start
(imports), w the swap, g the generation per checkpoint, and c ≥ 1 the slowdown of sharing cores
(N engines on a machine with fewer free cores than N × threads). The machine is shared: its load
average is recorded before and after each timing.

    python benchmarks/bench_engines.py [--backends hf,vllm] [--limit 16] [--repeat 1] [--work DIR]

Writes WORK/engines.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = 13
RESULT_FILES = ("records.parquet", "aggregates.parquet")


def bench(*args: str, cache: Path) -> float:
    """The real CLI in a subprocess; its wall time (raises with its stderr when it fails)."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PLASTICITY_BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.time() - started


def make_sweep(work: Path, cache: Path) -> list[tuple[int, Path]]:
    """The sweep's 13 checkpoint folders (steps 0..12), trained once and reused."""
    run = work / "sweep-run"
    if not (run / "checkpoints" / "manifest.json").is_file():  # once trained, its own evaluation is not needed
        config = work / "sweep.yaml"
        config.write_text(f"checkpoint_every: 1\nsteps: {CHECKPOINTS - 1}\n")
        bench("run", "--method", "sft", "-c", str(config), "--limit", "1", "--out", str(run), "-q", cache=cache)
    manifest = json.loads((run / "checkpoints" / "manifest.json").read_text())
    records = manifest["checkpoints"] if isinstance(manifest, dict) else manifest
    assert len(records) == CHECKPOINTS, f"{len(records)} checkpoints, not {CHECKPOINTS}"
    return [(record["step"], run / record["path"]) for record in records]


def score_sweep(
    sweep: list[tuple[int, Path]], out: Path, backend: str, engines: int, limit: int, cache: Path
) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    steps, folders = ",".join(str(step) for step, _ in sweep), [str(folder) for _, folder in sweep]
    load_before = os.getloadavg()[0]
    wall = bench(
        "eval", *folders, "--steps", steps, "--suite", "micro", "--limit", str(limit),
        "--backend", backend, "--engines", str(engines), "--out", str(out), "-q", cache=cache,
    )  # fmt: skip
    meta = json.loads((out / "run.json").read_text())
    return {
        "backend": backend,
        "engines": engines,
        "wall_s": round(wall, 1),
        "generate_s": meta["stages"]["generate"]["seconds"],
        "engine_timings": meta.get("engine_timings"),
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "folder": str(out),
    }


def identical(one: Path, many: Path) -> bool:
    names = sorted(p.name for p in (one / "generations").iterdir())
    if names != sorted(p.name for p in (many / "generations").iterdir()):
        return False
    files = [*RESULT_FILES, *(f"generations/{name}" for name in names)]
    return all((one / f).read_bytes() == (many / f).read_bytes() for f in files)


def model_line(one: dict[str, Any], many: dict[str, Any]) -> str:
    """Where the time goes, from the one-engine stage time and what the N engines report."""
    timings = many["engine_timings"] or []
    per_checkpoint_one = one["generate_s"] / CHECKPOINTS
    parts = []
    for t in timings:
        n = max(1, t["checkpoints"])
        parts.append(
            f"engine {t['engine']}: start {t['start']:.1f} s, {t['checkpoints']} checkpoints × "
            f"(swap {t['load'] / n:.2f} s + generate {t['generate'] / n:.2f} s)"
        )
    slowest = max((t["start"] + t["load"] + t["generate"] for t in timings), default=float("nan"))
    rounds = math.ceil(CHECKPOINTS / many["engines"])
    return (
        f"1 engine: {per_checkpoint_one:.2f} s per checkpoint; {many['engines']} engines: "
        + "; ".join(parts)
        + f"; busiest engine {slowest:.1f} s of a {many['generate_s']:.1f} s stage; "
        f"ideal {rounds} rounds × {per_checkpoint_one:.2f} s = {rounds * per_checkpoint_one:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="hf")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-engines"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "cache"
    folders = make_sweep(args.work, cache)
    results: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        for repeat in range(args.repeat):
            order = (1, 2) if repeat % 2 == 0 else (2, 1)
            runs = {n: score_sweep(folders, args.work / f"{backend}-{n}", backend, n, args.limit, cache) for n in order}
            same = identical(Path(runs[1]["folder"]), Path(runs[2]["folder"]))
            results.append({"backend": backend, "repeat": repeat, "identical": same, "runs": runs})
            print(model_line(runs[1], runs[2]), flush=True)
    (args.work / "engines.json").write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    print("| backend | repeat | 1 engine: stage / wall (s) | 2 engines: stage / wall (s) | ratio (stage) | identical |")
    print("|---|---|---|---|---|---|")
    for r in results:
        one, two = r["runs"][1], r["runs"][2]
        print(
            f"| {r['backend']} | {r['repeat']} | {one['generate_s']:.1f} / {one['wall_s']:.1f} | "
            f"{two['generate_s']:.1f} / {two['wall_s']:.1f} | {two['generate_s'] / one['generate_s']:.2f} | "
            f"{r['identical']} |"
        )


if __name__ == "__main__":
    main()
