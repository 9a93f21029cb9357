"""The checks of scripts/gpu-check.sh, one per call (docs/gpu-check.md).

    python scripts/gpu_check.py CHECK --mode cuda|cpu --work DIR     one check; DIR/CHECK.json gets its numbers
    python scripts/gpu_check.py merge --mode cuda|cpu --work DIR --out FILE    the JSON of all checks

Every run goes through `bench run`'s own command (the typer app, called in this process so that
the process's peak memory can be read after it). `--mode cuda` trains on the GPU (`device: cuda`:
bf16 autocast where the GPU has it) at real sizes; `--mode cpu` runs the same checks on the CPU at
the smallest sizes, so that the script itself is tested on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHECKS = ("environment", "organism_sft", "organism_grpo", "qwen3_full", "qwen3_lora", "accelerate_launch")
MiB = 2**20


@dataclass(frozen=True)
class Qwen3Shape:
    """A Qwen3 decoder's sizes: Qwen3-0.6B's own (its config.json on the hub), or the smallest one."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int  # above the organism tokenizer's 99 tokens, as 0.6B's is: ids it never produces
    max_position_embeddings: int


QWEN3_0_6B = Qwen3Shape(1024, 3072, 28, 16, 8, 128, 151936, 40960)
QWEN3_TINY = Qwen3Shape(32, 64, 2, 2, 1, 16, 1024, 256)


def organism_settings(mode: str, method: str) -> tuple[str, dict[str, Any]]:
    """The preset and the settings of the organism's runs: the shipped organism on a GPU (default
    preset, no pre-training), the smoke preset's tiny one on a CPU; a few steps either way."""
    if mode == "cuda":
        steps = 4 if method == "sft" else 2  # each GRPO step samples a rollout
        return "default", {"device": "cuda", "steps": steps, "checkpoint_every": 2, "train_examples": 64}
    return "smoke", {"device": "cpu", "steps": 2, "checkpoint_every": 0, "train_examples": 32}


def qwen3_settings(mode: str, lora: bool) -> dict[str, Any]:
    """Two steps of SFT on the Qwen3-shaped model: batch 8 of sequences up to 128 tokens (the
    organism's tasks are short: seq_len_bound keeps the estimate's activation bound at that length)."""
    settings: dict[str, Any] = {
        "device": mode,
        "steps": 2,
        "checkpoint_every": 0,
        "train_examples": 32,
        "batch_size": 8 if mode == "cuda" else 4,
        "seq_len_bound": 128,
    }
    if lora:
        settings["lora"] = {"r": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    return settings


def environment(mode: str) -> dict[str, Any]:
    """Versions and the device; on a GPU its name, memory and bf16 support."""
    import accelerate
    import peft
    import torch
    import transformers

    found: dict[str, Any] = {
        "mode": mode,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "cuda_available": torch.cuda.is_available(),
        "vllm_importable": module_importable("vllm"),
        "device_name": platform.processor() or platform.machine(),
    }
    if mode == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --mode cuda but torch sees no CUDA GPU")
        properties = torch.cuda.get_device_properties(0)
        found.update(
            device_name=torch.cuda.get_device_name(0),
            device_memory_bytes=properties.total_memory,
            device_count=torch.cuda.device_count(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return found


def module_importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def write_config(folder: Path, settings: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def bench_run(arguments: list[str]) -> None:
    """`bench run ARGUMENTS` through the CLI's typer app, in this process; raises what it raises."""
    from plasticity_bench.harness.app.cli import app

    status = app(["run", *arguments], standalone_mode=False)
    if isinstance(status, int) and status:
        raise SystemExit(f"error: bench run exited with status {status}")


def memory_estimate(preset: str, config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """What `bench run --dry-run` prints, for the same settings: the estimate per process (bytes)."""
    from plasticity_bench.harness.app.config import load_config
    from plasticity_bench.harness.app.memory import dry_run

    lines, plan = dry_run(load_config(preset, config, overrides))
    found = plan.estimate()
    return {"estimate_bytes": found.total, "estimate_parts_bytes": dict(found.rows()), "dry_run": lines}


class PeakMemory:
    """The peak memory of what runs inside the `with`: CUDA's allocator peak on a GPU; on a CPU the
    growth of the process's resident peak (VmHWM, reset through /proc/self/clear_refs), the CPU's
    analogue (torch keeps no allocator statistics on a CPU)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.peak: int | None = None
        self.kind = "torch.cuda.max_memory_allocated" if mode == "cuda" else "growth of VmHWM (resident peak)"

    def __enter__(self) -> PeakMemory:
        import torch

        if self.mode == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            self.before = status_kib("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *_: object) -> None:
        import torch

        if self.mode == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.before
        else:
            self.peak = status_kib("VmHWM") * 1024 - self.before


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_and_measure(
    mode: str, preset: str, method: str, settings: dict[str, Any], folder: Path, model: Path | None = None
) -> dict[str, Any]:
    """One `bench run` (hf backends, 2 items a set), its estimate, its peak memory and what it recorded."""
    config = write_config(folder, settings)
    arguments = ["--method", method, "--preset", preset, "-c", str(config), "--backend", "hf"]
    arguments += ["--rollout-backend", "hf", "--limit", "2", "-q", "-o", str(folder / "run")]
    overrides: dict[str, Any] = {"method": method, "backend": "hf", "rollout_backend": "hf"}
    if model is not None:
        arguments += ["--model", str(model)]
        overrides["model"] = str(model)
    found = memory_estimate(preset, config, overrides)
    with PeakMemory(mode) as peak:
        bench_run(arguments)
    found.update(peak_memory_bytes=peak.peak, peak_memory_kind=peak.kind, settings=settings)
    if peak.peak:
        found["estimate_over_peak"] = round(found["estimate_bytes"] / peak.peak, 3)
    found.update(recorded(folder / "run", mode))
    return found


def recorded(run: Path, mode: str) -> dict[str, Any]:
    """What the run folder says: where it trained, its losses; fails when it did not train where asked."""
    import pandas as pd

    meta = json.loads((run / "run.json").read_text())
    device = str(meta.get("training_device"))
    losses = pd.read_parquet(run / "train_log.parquet")["loss"].tolist()
    if not device.startswith(mode):
        raise SystemExit(f"error: the run trained on {device}, not {mode}")
    if mode == "cuda" and "bf16" not in device and cuda_bf16():
        raise SystemExit(f"error: the GPU supports bf16 but the run trained in {device}")
    if not losses or not all(loss == loss and abs(loss) != float("inf") for loss in losses):
        raise SystemExit(f"error: the training losses are not all finite: {losses}")
    steps = sorted(path for path in (run / "checkpoints").iterdir() if path.is_dir())
    final = json.loads((steps[-1] / "config.json").read_text()) if steps else {}
    checkpoints = [path.name for path in steps]
    return {"training_device": device, "losses": losses, "checkpoints": checkpoints, "final_dtype": final.get("dtype")}


def cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def build_qwen3(mode: str, folder: Path) -> dict[str, Any]:
    """A randomly initialised Qwen3 model (0.6B's sizes on a GPU, the smallest on a CPU) in bf16, as
    Qwen3-0.6B ships, saved with the organism's tokenizer. The embedding keeps 0.6B's vocabulary so
    that the memory is 0.6B's: the tokenizer never produces the ids above its 99, and those the
    random model generates decode to nothing."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from plasticity_bench.harness.app.organism import build_tokenizer

    shape = QWEN3_0_6B if mode == "cuda" else QWEN3_TINY
    tokenizer = build_tokenizer()
    config = Qwen3Config(
        **dataclasses.asdict(shape),
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(mode):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"model_parameters": sum(p.numel() for p in model.parameters()), "model_shape": dataclasses.asdict(shape)}


def qwen3_check(mode: str, work: Path, lora: bool) -> dict[str, Any]:
    folder = work / "qwen3-model"
    built = {} if (folder / "config.json").exists() else build_qwen3(mode, folder)
    name = "qwen3_lora" if lora else "qwen3_full"
    found = run_and_measure(mode, "default", "sft", qwen3_settings(mode, lora), work / name, folder)
    return {**built, **found}


def launched(mode: str, work: Path) -> dict[str, Any]:
    """Inside `accelerate launch --num_processes 1`: what accelerate set up, then an SFT run."""
    from accelerate import PartialState

    state = PartialState()
    found: dict[str, Any] = {
        "num_processes": state.num_processes,
        "process_index": state.process_index,
        "distributed_type": str(state.distributed_type),
        "accelerate_device": str(state.device),
        # the launcher passes its settings to the process it starts as ACCELERATE_* variables
        "launched_by_accelerate": any(key.startswith("ACCELERATE_") for key in os.environ),
    }
    if state.num_processes != 1 or not found["launched_by_accelerate"]:
        raise SystemExit(f"error: expected one process started by accelerate, found {found}")
    preset, settings = organism_settings(mode, "sft")
    return {**found, **run_and_measure(mode, preset, "sft", {**settings, "steps": 2}, work / "accelerate", None)}


def run_check(name: str, mode: str, work: Path) -> dict[str, Any]:
    if name == "environment":
        return environment(mode)
    if name in ("organism_sft", "organism_grpo"):
        method = name.removeprefix("organism_")
        preset, settings = organism_settings(mode, method)
        return run_and_measure(mode, preset, method, settings, work / name)
    if name in ("qwen3_full", "qwen3_lora"):
        return qwen3_check(mode, work, lora=name == "qwen3_lora")
    if name == "accelerate_launch":
        return launched(mode, work)
    raise SystemExit(f"error: unknown check {name!r}; known: {', '.join(CHECKS)}")


ERROR_LINE = re.compile(r"^(error:|[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b)")


def error_line(log: Path) -> str | None:
    """The line that says why a check failed: the last `error: …` line, else a traceback's last
    line (`SomeError: …`), else the log's last line."""
    if not log.exists():
        return None
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    matching = [line for line in lines if ERROR_LINE.match(line)]
    return (matching or lines)[-1] if lines else None


def merged_check(name: str, work: Path) -> dict[str, Any]:
    """One check's entry: the shell's status line (exit status, seconds, limit) with the numbers the
    check wrote; a check that timed out or crashed before writing them still gets its entry."""
    status_file = work / f"{name}.status"
    if not status_file.exists():
        return {"status": "failed", "ok": False, "seconds": None, "error": "the check did not run"}
    rc, seconds, limit = status_file.read_text().split()
    result_file = work / f"{name}.json"
    numbers = json.loads(result_file.read_text()) if result_file.exists() else {}
    ok = rc == "0" and result_file.exists()
    error = None
    if not ok:
        error = f"timed out after {limit} s" if rc in ("124", "137") else error_line(work / f"{name}.log")
        error = error or f"exit status {rc}, no result written"
    entry = {"status": "ok" if ok else "failed", "ok": ok, "seconds": float(seconds), "timeout_s": int(limit)}
    return {**entry, "exit_status": int(rc), "error": error, **numbers}


def merge(mode: str, work: Path, out: Path) -> bool:
    checks = {name: merged_check(name, work) for name in CHECKS}
    env = checks["environment"]
    report = {
        "mode": mode,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "all_ok": all(check["ok"] for check in checks.values()),
        "seconds": round(sum(check["seconds"] or 0 for check in checks.values()), 1),
        "device_name": env.get("device_name"),
        "torch": env.get("torch"),
        "cuda": env.get("cuda"),
        "checks": checks,
    }
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return bool(report["all_ok"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=[*CHECKS, "merge"])
    parser.add_argument("--mode", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args()
    if args.check == "merge":
        sys.exit(0 if merge(args.mode, args.work, args.out) else 1)
    started = time.time()
    found = run_check(args.check, args.mode, args.work)
    found["check_seconds_in_process"] = round(time.time() - started, 2)
    (args.work / f"{args.check}.json").write_text(json.dumps(found, default=str))
    print(f"{args.check}: ok", flush=True)
    os._exit(0)  # skip the interpreter's teardown of torch & co (seconds); the result is written


if __name__ == "__main__":
    main()
