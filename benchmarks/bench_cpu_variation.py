"""How far the same post-training run moves between thread settings and kernel levels, from the same start.

The default organism ships with the package, so every machine starts `bench run` from the same
weights; what is left to differ is the post-training itself. This runs the default
`bench run --method M` (the shipped organism, the default preset) under a few CPU settings, each
with its own organism cache and run folder, and compares every variant with the first:

  * `OMP_NUM_THREADS` 1 vs 2 (torch's intra-op threads: reductions are split differently),
  * `ATEN_CPU_CAPABILITY` avx2 vs default (torch's vectorised kernels vs its scalar ones).

For each pair it reports the final checkpoint's weights (largest absolute difference, and the
tensor holding it), the train log (largest loss difference, first step that differs), the
records (scored rows whose `correct` flipped, at every step and at the last one) and the
aggregates (largest score difference per set at the last step, and over all steps).

Run the variants one after another (`--jobs` does not exist on purpose): a thread setting only
means something when the run is alone on the cores. On a shared machine the 2-thread variant's
numbers are still valid (the result does not depend on load), its wall time is not.

    python benchmarks/bench_cpu_variation.py [--methods rps sft] [--work DIR] [--repeat]

`--repeat` adds a second run of the first variant: the noise floor (0 when runs are deterministic).
Writes WORK/cpu_variation.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

ROW_KEY = ["item_id", "step", "sample", "family", "task", "level"]
AGG_KEY = ["step", "family", "slice"]


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str]


VARIANTS = (
    Variant("1 thread, avx2", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"}),
    Variant("2 threads, avx2", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"}),
    Variant("1 thread, default kernels", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}),
)
REPEAT = Variant("1 thread, avx2 (repeat)", VARIANTS[0].env)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def run_variant(method: str, variant: Variant, work: Path) -> tuple[Path, float]:
    """The default `bench run --method METHOD` under VARIANT's settings, in a folder and cache of its own."""
    base = work / slug(f"{method} {variant.name}")
    out, cache = base / "run", base / "cache"
    if not (base / "done").exists() and (out / "summary.json").is_file() and not (base / "log.txt").exists():
        (base / "done").write_text("nan")  # finished under a call that was stopped before it could note the time
    if (base / "done").exists():
        return out, float((base / "done").read_text() or "nan")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = {**os.environ, **variant.env, "PLASTICITY_BENCH_CACHE": str(cache)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", "run", "--method", method, "--out", str(out), "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    (base / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{method} / {variant.name} failed: see {base / 'log.txt'}")
    (base / "done").write_text(f"{seconds:.1f}")
    return out, seconds


def last_checkpoint(run: Path) -> Path:
    folders = sorted(p for p in (run / "checkpoints").glob("step-*") if p.is_dir() and not p.name.endswith(".partial"))
    return folders[-1]


def weights_diff(a: Path, b: Path) -> dict[str, object]:
    """Largest |a - b| over every tensor of the two runs' final checkpoints."""
    left = load_file(str(last_checkpoint(a) / "model.safetensors"))
    right = load_file(str(last_checkpoint(b) / "model.safetensors"))
    diffs = {name: (left[name].double() - right[name].double()).abs().max().item() for name in left}
    worst = max(diffs, key=lambda name: diffs[name])
    identical = all(torch.equal(left[name], right[name]) for name in left)
    return {"max_abs": diffs[worst], "tensor": worst, "identical": identical}


def weights_by_step(a: Path, b: Path) -> dict[int, float]:
    """Largest |a - b| at every checkpoint both runs have written so far: when, in training, the runs part."""
    steps: dict[int, float] = {}
    for folder in sorted((a / "checkpoints").glob("step-*")):
        other = b / "checkpoints" / folder.name
        if folder.is_dir() and (other / "model.safetensors").is_file() and (folder / "model.safetensors").is_file():
            left, right = load_file(str(folder / "model.safetensors")), load_file(str(other / "model.safetensors"))
            gap = max((left[k].double() - right[k].double()).abs().max().item() for k in left)
            steps[int(folder.name.split("-")[1])] = gap
    return steps


def train_log_diff(a: Path, b: Path) -> dict[str, object]:
    left, right = pd.read_parquet(a / "train_log.parquet"), pd.read_parquet(b / "train_log.parquet")
    both = left.merge(right, on="step", suffixes=("_a", "_b"))
    gap = (both["loss_a"] - both["loss_b"]).abs()
    differing = both.loc[gap > 0, "step"]
    return {
        "max_loss_diff": float(gap.max()),
        "first_step_differing": int(differing.min()) if len(differing) else None,
    }


def records_diff(a: Path, b: Path) -> dict[str, object]:
    left, right = pd.read_parquet(a / "records.parquet"), pd.read_parquet(b / "records.parquet")
    both = left.merge(right, on=ROW_KEY, suffixes=("_a", "_b"))
    flipped = both[both["correct_a"] != both["correct_b"]]
    last = both["step"].max()
    at_last = flipped[flipped["step"] == last]
    return {
        "rows": len(both),
        "flipped": len(flipped),
        "outputs_differ": int((both["output_a"] != both["output_b"]).sum()),
        "last_step": int(last),
        "rows_last": int((both["step"] == last).sum()),
        "flipped_last": len(at_last),
        "flipped_last_by_set": at_last.groupby(["family", "task", "level"]).size().astype(int).to_dict(),
    }


def aggregates_diff(a: Path, b: Path) -> dict[str, object]:
    left, right = pd.read_parquet(a / "aggregates.parquet"), pd.read_parquet(b / "aggregates.parquet")
    both = left.merge(right, on=AGG_KEY, suffixes=("_a", "_b"))
    both["diff"] = both["score_b"] - both["score_a"]
    last = both[both["step"] == both["step"].max()]
    return {
        "max_abs_any_step": float(both["diff"].abs().max()),
        "last_step_by_set": {f"{r.family}:{r.slice}": round(float(r.diff), 3) for r in last.itertuples()},
        "max_abs_last": float(last["diff"].abs().max()),
    }


def compare(a: Path, b: Path) -> dict[str, object]:
    return {
        "weights": weights_diff(a, b),
        "weights_by_step": weights_by_step(a, b),
        "train_log": train_log_diff(a, b),
        "records": records_diff(a, b),
        "aggregates": aggregates_diff(a, b),
    }


def table(results: dict[str, dict[str, object]]) -> str:
    lines = [
        "| method | variant vs 1 thread, avx2 | run s | max weight diff | max loss diff | first step differing "
        "| items flipped (all steps) | items flipped (last step) | max score diff, last step (pts) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, per_variant in results.items():
        for name, entry in per_variant.items():
            c = entry.get("vs_first")
            if not isinstance(c, dict):
                continue
            w, t, r, g = c["weights"], c["train_log"], c["records"], c["aggregates"]
            lines.append(
                f"| {method} | {name} | {entry['seconds']:.0f} | {w['max_abs']:.3g} (`{w['tensor']}`) "
                f"| {t['max_loss_diff']:.3g} | {t['first_step_differing']} "
                f"| {r['flipped']} of {r['rows']} | {r['flipped_last']} of {r['rows_last']} "
                f"| {g['max_abs_last']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["rps", "sft"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-cpu-variation"))
    parser.add_argument("--repeat", action="store_true", help="a second run of the first variant (the noise floor)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="VARIANT",
        help="make only these variants' runs (their folder names, e.g. 1-thread-default-kernels), compare nothing: "
        "to make runs in separate processes; a later call without --only compares the kept runs",
    )
    parser.add_argument(
        "--trajectory", action="store_true", help="only the weights' difference at every checkpoint written so far"
    )
    parser.add_argument("--done-only", action="store_true", help="compare the runs finished so far, make none")
    args = parser.parse_args()
    variants = [*VARIANTS, REPEAT] if args.repeat else list(VARIANTS)
    if args.trajectory:
        for method in args.methods:
            first = args.work / slug(f"{method} {variants[0].name}") / "run"
            for variant in variants[1:]:
                other = args.work / slug(f"{method} {variant.name}") / "run"
                if other.is_dir() and first.is_dir():
                    gaps = ", ".join(f"{step}: {gap:.3g}" for step, gap in weights_by_step(first, other).items())
                    print(f"{method} / {variant.name} vs {variants[0].name}, max weight diff by step: {gaps}")
        return
    if args.only:
        for method in args.methods:
            for variant in variants:
                if slug(variant.name) in args.only:
                    print(f"{method} / {variant.name}: {run_variant(method, variant, args.work)[1]:.0f} s", flush=True)
        return
    results: dict[str, dict[str, object]] = {}
    for method in args.methods:
        per_variant: dict[str, object] = {}
        first: Path | None = None
        for variant in variants:
            if args.done_only and not (args.work / slug(f"{method} {variant.name}") / "done").exists():
                continue
            out, seconds = run_variant(method, variant, args.work)
            print(f"{method} / {variant.name}: {seconds:.0f} s", flush=True)
            entry: dict[str, object] = {"env": variant.env, "seconds": seconds, "run": str(out)}
            if first is None:
                first = out
            else:
                entry["vs_first"] = compare(first, out)
            per_variant[variant.name] = entry
        results[method] = per_variant
    (args.work / "cpu_variation.json").write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    print(f"details: {args.work / 'cpu_variation.json'}")


if __name__ == "__main__":
    main()
