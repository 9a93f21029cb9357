"""scripts/gpu-check.sh (docs/gpu-check.md): its CPU mode runs every check at the smallest sizes and
writes the JSON a GPU run writes; a check that fails or times out is recorded, with its error line,
without stopping the others."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu-check.sh"
HELPER = ROOT / "scripts" / "gpu_check.py"
CHECKS = ("environment", "organism_sft", "organism_grpo", "qwen3_full", "qwen3_lora", "accelerate_launch")
TRAINING = CHECKS[1:]


def script_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PLASTICITY_BENCH_CACHE": str(cache)}


@pytest.mark.e2e
def test_cpu_mode_runs_every_check(tmp_path: Path, bench_cache: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), "--cpu"],
        capture_output=True,
        text=True,
        env=script_env(bench_cache),
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["all_ok"] is True
    assert report["torch"] and report["device_name"] and report["cuda"] is None
    assert list(report["checks"]) == list(CHECKS)
    for name, check in report["checks"].items():
        assert check["ok"] is True and check["status"] == "ok" and check["error"] is None, name
        assert 0 < check["seconds"] < check["timeout_s"], name
    for name in TRAINING:
        check = report["checks"][name]
        assert check["training_device"].startswith("cpu"), name
        assert check["estimate_bytes"] > 0 and check["peak_memory_bytes"] > 0, name
        assert check["losses"] and all(math.isfinite(loss) for loss in check["losses"]), name
        assert check["checkpoints"][-1] == f"step-{check['settings']['steps']:06d}", name
    qwen_full, qwen_lora = report["checks"]["qwen3_full"], report["checks"]["qwen3_lora"]
    # the bf16 folder trains with float32 master weights, and its checkpoints are saved as such
    assert qwen_full["final_dtype"] == qwen_lora["final_dtype"] == "float32"
    assert qwen_full["model_parameters"] > 0 and "lora" in qwen_lora["settings"]
    assert qwen_lora["estimate_parts_bytes"]["optimizer"] < qwen_full["estimate_parts_bytes"]["optimizer"]
    launched = report["checks"]["accelerate_launch"]
    assert launched["launched_by_accelerate"] is True and launched["num_processes"] == 1


def test_failed_and_timed_out_checks_are_recorded(tmp_path: Path) -> None:
    """The merge step alone, on what the shell leaves: a crash's error line, a timeout, a check that never ran."""
    (tmp_path / "environment.status").write_text("0 1.5 40\n")
    (tmp_path / "environment.json").write_text(json.dumps({"device_name": "x", "torch": "t", "cuda": None}))
    (tmp_path / "organism_sft.status").write_text("1 3.0 70\n")
    (tmp_path / "organism_sft.log").write_text(
        "Traceback (most recent call last):\n  File 'x', line 1\ntorch.OutOfMemoryError: CUDA out of memory\n"
        "some warning after it\n"
    )
    (tmp_path / "organism_grpo.status").write_text("124 90.0 90\n")
    (tmp_path / "qwen3_full.status").write_text("1 2.0 120\n")
    (tmp_path / "qwen3_full.log").write_text("loading\nerror: the run trained on cpu (fp32), not cuda\n")
    out = tmp_path / "out.json"
    command = [sys.executable, str(HELPER), "merge", "--mode", "cuda", "--work", str(tmp_path), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert report["all_ok"] is False and report["device_name"] == "x" and checks["environment"]["ok"] is True
    assert checks["organism_sft"]["error"] == "torch.OutOfMemoryError: CUDA out of memory"
    assert checks["organism_grpo"]["error"] == "timed out after 90 s" and checks["organism_grpo"]["status"] == "failed"
    assert checks["qwen3_full"]["error"] == "error: the run trained on cpu (fp32), not cuda"
    assert checks["qwen3_lora"] == {"status": "failed", "ok": False, "seconds": None, "error": "the check did not run"}


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--gpus"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown option --gpus" in done.stderr
    assert not (tmp_path / "gpu-check.json").exists()
