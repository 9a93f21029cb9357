"""Where training runs: the device/dtype rule, checked on a CPU by telling it what a GPU would report."""

from __future__ import annotations

import pytest
import torch

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.trainers.device import Placement, choose_placement, to_device


def test_cpu_trains_in_fp32() -> None:
    assert choose_placement("auto", cuda_available=False) == Placement("cpu", None)
    assert choose_placement("cpu", cuda_available=True, bf16_supported=True) == Placement("cpu", None)
    assert choose_placement().device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_gpu_trains_there_in_bf16_where_supported() -> None:
    assert choose_placement("auto", cuda_available=True, bf16_supported=True) == Placement("cuda", torch.bfloat16)
    assert choose_placement("cuda", cuda_available=True, bf16_supported=False) == Placement(
        "cuda", None
    )  # e.g. a V100: fp32
    assert "bf16" in Placement("cuda", torch.bfloat16).describe() and "fp32" in Placement("cpu", None).describe()


def test_bad_requests_are_clear_errors() -> None:
    with pytest.raises(BenchError, match="no CUDA GPU is visible"):
        choose_placement("cuda", cuda_available=False)
    with pytest.raises(BenchError, match="unknown device 'tpu'"):
        choose_placement("tpu")


def test_cpu_batches_stay_put_and_autocast_is_off() -> None:
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "examples": 4}
    assert to_device(batch, "cpu") is batch
    with Placement("cpu", None).autocast():
        assert not torch.is_autocast_enabled()


def test_gradient_accumulation_gives_the_whole_batchs_update() -> None:
    """Two micro-batches of equally long rows step the weights as the whole batch does."""
    from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
    from plasticity_bench.harness.core.items import Item
    from plasticity_bench.trainers.common import LoopConfig, TrainContext, collate, encode, micro_batches
    from plasticity_bench.trainers.sft import SFT

    tokenizer = build_tokenizer()
    rows = [
        encode(tokenizer, Item("", "", "", "", f"calc {a}+{b}\n", f"{a}+{b}={a + b}#{a + b}", ""))
        for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]
    ]
    batch = collate(rows, tokenizer.pad_token_id)
    weights = []
    for accum in (1, 2):
        model = build_model(
            OrganismConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
            len(tokenizer),
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = TrainContext(tokenizer, LoopConfig(4, 0.0, 0.0, 0.0, 1e9, 0, 0, accum))
        metrics = SFT().update(model, batch, optimizer, ctx)
        weights.append((torch.cat([p.detach().flatten() for p in model.parameters()]), metrics["loss"]))
    torch.testing.assert_close(weights[0][0], weights[1][0], rtol=0, atol=1e-6)
    assert abs(weights[0][1] - weights[1][1]) < 1e-6
    parts = micro_batches({**batch, "examples": torch.tensor(4)}, 3)
    assert [p["input_ids"].shape[0] for p, _ in parts] == [1, 2, 1] and sum(w for _, w in parts) == 1.0
    assert all(int(p["examples"]) == 4 for p, _ in parts)


@pytest.mark.e2e
def test_a_run_records_where_it_trained_and_accumulates(tmp_path) -> None:
    import json

    from tests.helpers import cli

    out = tmp_path / "run"
    done = cli(
        "run",
        "--method",
        "sft",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "-q",
        "-c",
        str(_config(tmp_path, "grad_accum: 2\ndevice: cpu\n")),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["training_device"] == "cpu (fp32, fp32 weights)"


def _config(folder, text: str):
    path = folder / "config.yaml"
    path.write_text(text)
    return path
