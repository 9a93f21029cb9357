"""Sharded training with torch's FSDP2 (harness/app/sharding.py, trainers/fsdp.py, docs/scale.md), through
the real CLI on the smoke preset, two processes over gloo on this CPU:

- SFT by 2 processes sharding the model equals 1 process with grad_accum 2 on the same global batches: loss
  per step and final weights within 1e-5 (FSDP sums the processes' share-weighted gradients, as the
  data-parallel all-reduce does, and the clipped norm is the whole gradient's). The sharded run is killed with
  SIGKILL after step 3 (torchrun, `--strategy fsdp`) and re-run through accelerate with the shipped
  configs/accelerate/fsdp.yaml (the same strategy, so the same run): it resumes from step 2, the whole AdamW
  state gathered into that checkpoint going back into the shards (a wrong one moves the next steps far more
  than 1e-5), and ends as one ordinary run folder, scored, whose checkpoints hold whole weights.
  (By hand, a resumed run and an uninterrupted one were byte-identical: weights, train log, records.)
- GRPO sharded (zero3) samples its rollouts with a whole copy of the policy holding the gathered current weights
  (trainers/sharded.py): the same rollouts, losses and weights as the 2-process data-parallel run.
- What FSDP cannot train here is refused in one line before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from plasticity_bench.harness.store import read_manifest
from tests.conftest import ROOT
from tests.test_multiprocess import (
    GRPO,
    assert_ordinary,
    assert_same_rollouts_and_weights,
    assert_same_training,
    bench_run,
    final_weights,
    one_process_sft,  # noqa: F401  (the session's 1-process run, a fixture)
    two_process_grpo,  # noqa: F401  (the session's 2-process data-parallel GRPO run, a fixture)
)

pytestmark = pytest.mark.xdist_group("multiprocess")

SFT = "steps: 4\ncheckpoint_every: 2\neval_per_slice: 1\n"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"
ACCELERATE_FSDP = ("--num-processes", "2", "--launcher", "accelerate", "--accelerate-config", str(FSDP_CONFIG))


def test_sft_sharded_over_two_processes_killed_and_resumed_equals_one_process(
    bench_cache: Path,
    one_process_sft: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(SFT)
    one, two = one_process_sft, tmp_path / "two"
    killed = bench_run(bench_cache, two, "sft", config, "--num-processes", "2", "--strategy", "fsdp", kill_at="step:3")
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert "resume training from step 2" in killed.stderr and len(killed.stderr.strip().splitlines()) == 1
    resumed = bench_run(bench_cache, two, "sft", config, *ACCELERATE_FSDP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ordinary(two)
    assert_same_training(one, two)
    start, weights_two = (
        load_file(two / read_manifest(two / "checkpoints")[0].path / "model.safetensors"),
        final_weights(two),
    )
    assert max((start[k] - weights_two[k]).abs().max().item() for k in start) > 1e-6  # training moved the weights
    meta = json.loads((two / "run.json").read_text())
    assert meta["config"]["strategy"] == "fsdp" and meta["launcher"] == "accelerate"  # chosen by the accelerate config
    train = meta["stages"]["train"]
    assert train["resumed_from_step"] == 2 and train["sharding"]["layers"] == ["Qwen3DecoderLayer"]
    assert train["sharding"]["reshard_after_forward"] is True
    assert meta["fingerprint"] != json.loads((one / "run.json").read_text())["fingerprint"]


def test_one_process_keeps_its_identity_whatever_the_strategy() -> None:
    from plasticity_bench.harness.app.config import RunConfig

    assert RunConfig(strategy="fsdp").fingerprint() == RunConfig().fingerprint()  # the memory estimate alone reads it
    assert RunConfig(num_processes=2, strategy="ddp").fingerprint() == RunConfig(num_processes=2).fingerprint()
    assert RunConfig(num_processes=2, strategy="fsdp").fingerprint() != RunConfig(num_processes=2).fingerprint()


REFUSED = {
    "one process": (("--strategy", "fsdp"), "strategy fsdp shards the model over the training processes"),
    "zero3 with an FSDP config": (
        (*ACCELERATE_FSDP, "--strategy", "zero3"),
        "asks for FSDP, which sets the sharding itself: use strategy: fsdp",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_sharding_settings_are_one_line(bench, case: str) -> None:
    args, message = REFUSED[case]
    done = bench("run", "--preset", "smoke", *args, "--dry-run")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_lora_is_refused_sharded_before_anything_is_written(bench_cache: Path, tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(SFT + "lora: {r: 4}\n")
    out = tmp_path / "run"
    done = bench_run(bench_cache, out, "sft", config, "--num-processes", "2", "--strategy", "zero3")
    assert done.returncode == 2 and "strategy zero3 does not train LoRA adapters here" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_grpo_sharded_samples_what_data_parallel_samples(
    bench_cache: Path,
    two_process_grpo: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "grpo.yaml"
    config.write_text(GRPO)
    done = bench_run(bench_cache, tmp_path / "zero3", "grpo", config, "--num-processes", "2", "--strategy", "zero3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_ordinary(tmp_path / "zero3")
    assert_same_rollouts_and_weights(two_process_grpo, tmp_path / "zero3")


@pytest.mark.parametrize(
    ("method", "options", "refused"),
    [("pcr", {}, True), ("l2sp", {}, True)]
    + [("grpo", {}, False), ("dpo", {}, False), ("dpo", {"pairs_from": "start"}, False), ("spot", {}, False)]
    + [("rps", {}, False), ("sft", {}, False)],
)
def test_what_sharding_cannot_train_is_refused(method: str, options: dict, refused: bool) -> None:
    """The same check as the LoRA refusal above (`bench run` calls it before writing anything)."""
    from plasticity_bench.harness.app.config import RunConfig
    from plasticity_bench.harness.app.sharding import check_sharded_training
    from plasticity_bench.harness.core.errors import BenchError

    config = RunConfig(method=method, options=options, num_processes=2, strategy="fsdp")
    if not refused:
        check_sharded_training(config)
        return
    with pytest.raises(BenchError, match="use strategy: ddp") as error:
        check_sharded_training(config)
    assert "\n" not in str(error.value)
