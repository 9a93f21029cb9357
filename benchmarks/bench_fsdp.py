"""SFT's training loop on 2 processes with whole models (ddp), sharded by FSDP2 (zero3 = fsdp's FULL_SHARD,
zero2 = SHARD_GRAD_OP) and by DeepSpeed's own ZeRO-3 / ZeRO-2 (accelerate with configs/accelerate/zero3.yaml,
zero2.yaml), side by side: seconds per step and each training process's peak resident memory.

The model is a randomly initialised Qwen3 of about 27M parameters (hidden 512, 8 layers; the smoke organism's
tokenizer), large enough that its fp32 weights, gradients and AdamW moments (16 bytes a parameter, ≈ 0.43 GB)
show next to what importing torch and transformers costs a process. Each strategy trains it through the real
CLI (`bench run -m sft --model FOLDER --preset smoke`, one evaluation item per set), in turn, and this script
reads from each run folder

  * the training loop's seconds: from checkpoint 0's file to the last checkpoint's (setup, the steps, the
    final gathered save; without the processes' start), divided by the steps;
  * each training process's peak resident set (VmHWM of /proc/PID/status, polled while it runs).

All five train the same global batches (2 processes = 1 with grad_accum 2, tests/test_multiprocess.py,
tests/test_fsdp.py and tests/test_deepspeed.py), so they compare the same computation. Writes benchmarks/results/fsdp.md.

    OMP_NUM_THREADS=1 python benchmarks/bench_fsdp.py [--steps 8] [--batch-size 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fsdp.md"
STRATEGIES = ("ddp", "zero3", "zero2", "deepspeed-zero3", "deepspeed-zero2")
CONFIGS = ROOT / "configs" / "accelerate"


def strategy_args(strategy: str) -> list[str]:
    """`--strategy S` (FSDP2 for zero2/zero3), or accelerate with the shipped DeepSpeed config."""
    if strategy.startswith("deepspeed-"):
        config = CONFIGS / f"{strategy.removeprefix('deepspeed-')}.yaml"
        return ["--launcher", "accelerate", "--accelerate-config", str(config)]
    return ["--strategy", strategy]


def bench(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "plasticity_bench.harness.app.cli", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def make_model(work: Path, env: dict[str, str]) -> Path:
    """A random 27M-parameter Qwen3 with the smoke organism's tokenizer (a 1-step smoke run supplies it)."""
    seed_run = work / "tokenizer-run"
    config = work / "one-step.yaml"
    config.write_text("steps: 1\neval_per_slice: 1\n")
    done = bench(["run", "-m", "sft", "--preset", "smoke", "-q", "-o", str(seed_run), "-c", str(config)], env)
    _, err = done.communicate()
    if done.returncode != 0:
        raise SystemExit(f"bench run failed:\n{err[-3000:]}")
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(seed_run / "checkpoints" / "step-000000")
    shape = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8}
    model = Qwen3ForCausalLM(
        Qwen3Config(vocab_size=len(tokenizer), num_key_value_heads=4, head_dim=64, max_position_embeddings=512, **shape)
    )
    folder = work / "model-27m"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def peak_rss(pids: dict[int, int]) -> None:
    """Each running training process's peak resident set so far (kB), by pid, into `pids`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            launcher = b"torch.distributed.run" in command or b"accelerate.commands.launch" in command
            if b"train_worker" not in command or launcher:  # not the launcher itself
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                pids[int(entry.name)] = max(pids.get(int(entry.name), 0), int(line.split()[1]))


def run_once(work: Path, model: Path, strategy: str, steps: int, batch_size: int, env: dict[str, str]) -> dict:
    out = work / f"{strategy}-{time.monotonic_ns()}"
    config = work / f"{out.name}.yaml"
    config.write_text(f"steps: {steps}\nbatch_size: {batch_size}\ncheckpoint_every: 0\neval_per_slice: 1\n")
    args = ["run", "-m", "sft", "--model", str(model), "--preset", "smoke", "-o", str(out), "-q", "-c", str(config)]
    process = bench([*args, "--num-processes", "2", *strategy_args(strategy)], env)
    pids: dict[int, int] = {}
    while process.poll() is None:
        peak_rss(pids)
        time.sleep(0.2)
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"bench run failed:\n{err[-3000:]}")
    first, last = (out / "checkpoints" / name / "model.safetensors" for name in ("step-000000", f"step-{steps:06d}"))
    train = json.loads((out / "run.json").read_text())["stages"]["train"]
    peaks = sorted(pids.values(), reverse=True)
    return {
        "strategy": strategy,
        "loop_seconds": last.stat().st_mtime - first.stat().st_mtime,
        "train_seconds": train["seconds"],
        "parameters": train["parameters"],
        "peak_rss_mb": [round(kb / 1024) for kb in peaks],
    }


def report(rows: list[dict], steps: int, batch_size: int) -> str:
    lines = [
        "# SFT on 2 processes: whole models (ddp), FSDP2-sharded and DeepSpeed ZeRO (benchmarks/bench_fsdp.py)",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other work while measured), torch gloo; a random "
        f"Qwen3 of {rows[0]['parameters']:,} parameters, {steps} steps of batch {batch_size}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; medians of {len(rows) // len(STRATEGIES)} run(s).",
        "",
        "| strategy | loop per step (s) | train stage (s) | peak RSS per process (MB) |",
        "|---|---|---|---|",
    ]
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        loop = statistics.median(r["loop_seconds"] for r in mine) / steps
        train = statistics.median(r["train_seconds"] for r in mine)
        rss = " / ".join(str(v) for v in max((r["peak_rss_mb"] for r in mine), key=lambda v: v[:1]))
        lines.append(f"| {strategy} | {loop:.2f} | {train:.1f} | {rss} |")
    lines += ["", "Runs (in the order made):", "", *[f"- {r}" for r in rows]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env["PLASTICITY_BENCH_CACHE"] = os.environ.get("PLASTICITY_BENCH_CACHE", str(Path(folder) / "cache"))
        model = make_model(Path(folder), env)
        for _ in range(args.repeats):
            for strategy in STRATEGIES:  # in turn: every strategy feels the same load on a shared machine
                rows.append(run_once(Path(folder), model, strategy, args.steps, args.batch_size, env))
                print(rows[-1], flush=True)
    text = report(rows, args.steps, args.batch_size)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
