"""Sharded training with DeepSpeed's ZeRO (an accelerate config of `distributed_type: DEEPSPEED`;
harness/app/sharding.py, trainers/deepspeed_zero.py, docs/scale.md), through the real CLI on the smoke preset,
two processes over gloo on this CPU (DeepSpeed's CPU accelerator; no GPU, no oneCCL), with the shipped
configs/accelerate/zero2.yaml and zero3.yaml:

- SFT under ZeRO-3, killed with SIGKILL after step 3 and re-run: it resumes from step 2 (every process's ZeRO
  optimizer partition goes back into a new engine; a wrong one moves the next steps far more than 1e-5) and
  equals 1 process with grad_accum 2 on the same global batches: loss per step and final weights within 1e-5
  (DeepSpeed averages the processes' gradients; the loop hands it N times each process's share-weighted loss).
- RPS under ZeRO-2 (two stages: a new engine with a fresh AdamW for the second) equals RPS by 1 process.
- GRPO under ZeRO-3 samples its rollouts with a whole copy of the policy into which every process gathers the
  partitioned weights (trainers/sharded.py): the same rollouts, losses and weights as 2 data-parallel processes.
- One ordinary run folder each, whose checkpoints hold whole weights; run.json names the engine.
- What bench does not honour in a DeepSpeed config is refused in one line before anything starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.helpers import cli, rejected
from tests.test_multiprocess import (
    GRPO,
    assert_ordinary,
    assert_same_rollouts_and_weights,
    assert_same_training,
    bench_run,
    one_process_sft,  # noqa: F401  (the session's 1-process run, a fixture)
    two_process_grpo,  # noqa: F401  (the session's 2-process data-parallel GRPO run, a fixture)
)

pytestmark = pytest.mark.xdist_group("multiprocess")  # the `deepspeed` extra is part of the test install

SFT = "steps: 4\ncheckpoint_every: 2\neval_per_slice: 1\n"
CONFIGS = ROOT / "configs" / "accelerate"


def deepspeed(stage: int, config: Path | None = None) -> tuple[str, ...]:
    path = config or CONFIGS / f"zero{stage}.yaml"
    return ("--num-processes", "2", "--launcher", "accelerate", "--accelerate-config", str(path))


def test_sft_under_zero3_killed_and_resumed_equals_one_process(
    bench_cache: Path,
    one_process_sft: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(SFT)
    two = tmp_path / "two"
    killed = bench_run(bench_cache, two, "sft", config, *deepspeed(3), kill_at="step:3")
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert "resume training from step 2" in killed.stderr and len(killed.stderr.strip().splitlines()) == 1
    resumed = bench_run(bench_cache, two, "sft", config, *deepspeed(3))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ordinary(two)
    assert_same_training(one_process_sft, two)
    meta = json.loads((two / "run.json").read_text())
    assert meta["config"]["strategy"] == "zero3" and meta["launcher"] == "accelerate"  # chosen by the config
    assert meta["config"]["sharding_engine"] == "deepspeed"
    train = meta["stages"]["train"]
    assert train["resumed_from_step"] == 2 and train["sharding"] == {"engine": "DeepSpeed ZeRO-3", "strategy": "zero3"}
    one_train = json.loads((one_process_sft / "run.json").read_text())["stages"]["train"]
    assert train["parameters"] == one_train["parameters"]  # counted whole, not ZeRO-3's placeholders


def test_rps_under_zero2_equals_one_process_across_its_two_stages(bench_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "rps.yaml").write_text(SFT)
    (tmp_path / "rps_ga2.yaml").write_text(SFT + "grad_accum: 2\n")
    one = bench_run(bench_cache, tmp_path / "one", "rps", tmp_path / "rps_ga2.yaml")
    assert one.returncode == 0, one.stderr[-3000:]
    two = bench_run(bench_cache, tmp_path / "two", "rps", tmp_path / "rps.yaml", *deepspeed(2))
    assert two.returncode == 0, two.stderr[-3000:]
    assert_ordinary(tmp_path / "two")
    assert set(pd.read_parquet(tmp_path / "two" / "train_log.parquet")["stage"]) == {"easy", "hard"}
    assert_same_training(tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["stages"]["train"]["sharding"]["engine"] == (
        "DeepSpeed ZeRO-2"
    )


def test_grpo_under_zero3_samples_what_data_parallel_samples(
    bench_cache: Path,
    two_process_grpo: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "grpo.yaml").write_text(GRPO)
    done = bench_run(bench_cache, tmp_path / "zero3", "grpo", tmp_path / "grpo.yaml", *deepspeed(3))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_ordinary(tmp_path / "zero3")
    assert_same_rollouts_and_weights(two_process_grpo, tmp_path / "zero3")


def test_the_engine_is_part_of_a_sharded_runs_identity(bench, tmp_path: Path) -> None:
    """DeepSpeed's ZeRO-3 and FSDP2's compute the same steps with other float sums: two identities (a re-run
    with the other engine trains again), while every run made before DeepSpeed keeps its own."""
    from plasticity_bench.harness.app.config import RunConfig

    fsdp2, deepspeed = (RunConfig(num_processes=2, strategy="zero3", sharding_engine=e) for e in ("fsdp2", "deepspeed"))
    assert fsdp2.fingerprint() != deepspeed.fingerprint()
    assert RunConfig(sharding_engine="deepspeed").fingerprint() == RunConfig().fingerprint()  # one process: unused
    (tmp_path / "by-hand.yaml").write_text("strategy: zero3\nsharding_engine: deepspeed\n")
    done = bench("run", "--preset", "smoke", "--num-processes", "2", "-c", str(tmp_path / "by-hand.yaml"), "--dry-run")
    assert done.returncode == 2 and "comes from an accelerate config of distributed_type DEEPSPEED" in done.stderr


SHIPPED = (CONFIGS / "zero3.yaml").read_text()
REFUSED = {
    "stage 1": (SHIPPED.replace("zero_stage: 3", "zero_stage: 1"), "zero_stage must be 2 or 3"),
    "offload": (SHIPPED.replace("offload_param_device: none", "offload_param_device: cpu"), "must be none"),
    "zero.Init": (SHIPPED.replace("zero3_init_flag: false", "zero3_init_flag: true"), "zero3_init_flag must be false"),
    "accumulation": (
        SHIPPED.replace("gradient_accumulation_steps: 1", "gradient_accumulation_steps: 4"),
        "use bench's grad_accum setting",
    ),
    "clipping": (SHIPPED.replace("gradient_clipping: 1.0", "gradient_clipping: 0.5"), "is not the run's grad_clip 1"),
    "DeepSpeed's bf16": (SHIPPED.replace("mixed_precision: 'no'", "mixed_precision: bf16"), "must be 'no'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_bench_does_not_honour_in_a_deepspeed_config_is_one_line(bench, case: str, tmp_path: Path) -> None:
    text, message = REFUSED[case]
    config = tmp_path / "ds.yaml"
    config.write_text(text)
    done = bench("run", "--preset", "smoke", *deepspeed(3, config), "--out", str(tmp_path / "run"), "--dry-run")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_strategy_other_than_the_configs_stage_is_refused(bench) -> None:
    done = bench("run", "--preset", "smoke", *deepspeed(2), "--strategy", "zero3", "--dry-run")
    assert done.returncode == 2 and "asks for DeepSpeed ZeRO-2, which sets the sharding itself" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_without_deepspeed_installed_the_config_is_one_line_saying_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # Python's own marker for "cannot be imported"
    done = cli("run", "--preset", "smoke", *deepspeed(2), "--dry-run")
    rejected(
        done,
        f"accelerate config {CONFIGS / 'zero2.yaml'} asks for DeepSpeed, which is not installed: "
        "pip install 'plasticity-bench[deepspeed]'",
    )
