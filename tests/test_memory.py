"""The device memory check of `bench run` and `bench run --dry-run` (harness/app/memory.py,
harness/core/memory.py, docs/gpu-recipes.md).

The 8B cases use a Qwen3-8B-shaped model folder: the real config.json values and a model.safetensors
whose header lists every tensor of Qwen3-8B (bf16) and whose data are a sparse hole, so the folder
passes the model-folder checks (the header covers the file exactly) and takes no disk space. The
memory check refuses the run before anything reads the weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.memory import GB, Shape, Workload, check, estimate
from tests.conftest import ROOT

QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000,
    "hidden_act": "silu",
    "attention_bias": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
QWEN3_8B_PARAMETERS = 8_190_735_360  # Qwen/Qwen3-8B's model card: 8.2B


def qwen3_tensors(config: dict) -> Iterator[tuple[str, list[int]]]:
    h, i, d, v = config["hidden_size"], config["intermediate_size"], config["head_dim"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    yield "model.embed_tokens.weight", [v, h]
    yield "lm_head.weight", [v, h]
    yield "model.norm.weight", [h]
    for layer in range(config["num_hidden_layers"]):
        shapes = {
            "self_attn.q_proj.weight": [q, h],
            "self_attn.k_proj.weight": [kv, h],
            "self_attn.v_proj.weight": [kv, h],
            "self_attn.o_proj.weight": [h, q],
            "self_attn.q_norm.weight": [d],
            "self_attn.k_norm.weight": [d],
            "mlp.gate_proj.weight": [i, h],
            "mlp.up_proj.weight": [i, h],
            "mlp.down_proj.weight": [h, i],
            "input_layernorm.weight": [h],
            "post_attention_layernorm.weight": [h],
        }
        for name, shape in shapes.items():
            yield f"model.layers.{layer}.{name}", shape


@pytest.fixture(scope="module")
def qwen3_8b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3-8B-shaped model folder with a sparse (all-zero, unallocated) bf16 weights file."""
    folder = tmp_path_factory.mktemp("qwen3-8b")
    (folder / "config.json").write_text(json.dumps(QWEN3_8B))
    (folder / "tokenizer_config.json").write_text("{}")
    header, offset = {}, 0
    for name, shape in qwen3_tensors(QWEN3_8B):
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with (folder / "model.safetensors").open("wb") as handle:
        handle.write(len(blob).to_bytes(8, "little") + blob)
        handle.truncate(8 + len(blob) + offset)  # a hole: 16 GB long, nothing allocated
    return folder


def settings(tmp_path: Path, text: str) -> str:
    path = tmp_path / "memory.yaml"
    path.write_text(text)
    return str(path)


def table_of(stdout: str) -> dict[str, str]:
    """`bench run --dry-run`'s table: row name → its value (`16.38 GB`, `80.00 GB  (fits)`)."""
    rows = [line.strip().split("  ", 1) for line in stdout.splitlines() if line.startswith("  ")]
    return {name: value.strip() for name, value in rows}


ONE_GPU = "device_memory_gb: 80\ngrad_accum: 32\n"  # one 80 GB GPU; micro-batch of one sequence


def test_refuses_8b_full_finetune_on_one_80gb_gpu(bench, qwen3_8b: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = bench(
        "run", "--method", "sft", "--model", str(qwen3_8b), "-c", settings(tmp_path, ONE_GPU), "--out", str(out)
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    # the folder is bf16 but trains with float32 master weights: 16 bytes a parameter, 131 GB, plus activations
    assert "needs about 169.8 GB of device memory per process and the device has 80.0 GB" in lines[0]
    assert "weights 32.8 GB, gradients 32.8 GB, optimizer 65.5 GB, reference 0 MB, activations 38.8 GB" in lines[0]
    assert "would fit: LoRA (lora: {r: 8}) (71.6 GB)" in lines[0]
    assert "strategy: zero3 with num_processes: 4" in lines[0]
    assert not out.exists()


def test_accepts_8b_with_lora_and_dry_run_writes_nothing(bench, qwen3_8b: Path, tmp_path: Path) -> None:
    config = settings(tmp_path, ONE_GPU + "lora: {r: 8}\n")
    done = bench("run", "--method", "sft", "--model", str(qwen3_8b), "-c", config, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = table_of(done.stdout)
    assert table["weights"] == "32.76 GB"  # 8,190,735,360 parameters (the safetensors header), trained in float32
    assert table["gradients"] == "0.02 GB"  # only the adapters: 3,833,856 parameters
    assert table["total per process"] == "71.57 GB"
    assert table["device memory"] == "80.00 GB  (fits)"
    assert "8,190,735,360 parameters of 4 bytes, 3,833,856 trained" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.yaml"]  # no runs/ folder


def test_dry_run_of_a_run_that_does_not_fit_prints_the_table_and_exits_2(bench, qwen3_8b: Path, tmp_path: Path) -> None:
    config = settings(tmp_path, "device_memory_gb: 80\nnum_processes: 8\nstrategy: zero2\n")
    done = bench("run", "--method", "grpo", "--model", str(qwen3_8b), "-c", config, "--dry-run", cwd=tmp_path)
    # GRPO keeps π_ref (32.8 GB) and its micro-batch is a whole rollout: 64 sequences, 8 a process
    assert done.returncode == 2, done.stderr
    assert "memory per process (zero2, 8 processes)" in done.stdout
    table = table_of(done.stdout)
    # π_ref, and the whole copy that samples (FSDP2's zero2 keeps the weights sharded between steps): both whole
    assert table["reference"] == "65.53 GB"
    assert table["optimizer"] == "8.19 GB"  # 2 × 4 bytes × 8.19e9 / 8
    assert table["device memory"] == "80.00 GB  (does not fit)"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # DeepSpeed's ZeRO-2 keeps the weights whole and samples with them: π_ref alone
    zero2 = str(ROOT / "configs" / "accelerate" / "zero2.yaml")
    args = ("--model", str(qwen3_8b), "-c", config, "--launcher", "accelerate", "--accelerate-config", zero2)
    done = bench("run", "--method", "grpo", *args, "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and table_of(done.stdout)["reference"] == "32.76 GB", done.stdout + done.stderr


def test_organism_dry_run(bench, tmp_path: Path) -> None:
    """The default preset's organism: 1,256,160 fp32 parameters, 16 bytes each, and the activation
    bound of 32 sequences of 128 tokens (BENCHMARKS §17 measures the real peak)."""
    done = bench("run", "--method", "sft", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1,256,160 parameters of 4 bytes, 1,256,160 trained" in done.stdout
    assert "micro-batch: 32 x 1 sequences of up to 128 tokens" in done.stdout
    table = table_of(done.stdout)
    assert table["optimizer"] == "10.05 MB"  # 2 × 4 bytes × 1,256,160
    assert table["device memory"].endswith("(fits)")
    assert list(tmp_path.iterdir()) == []


def test_bad_memory_settings_are_one_line(bench, tmp_path: Path) -> None:
    done = bench("run", "--dry-run", "-c", settings(tmp_path, "strategy: zero9\n"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: strategy must be one of ddp, zero2, zero3, fsdp, got 'zero9' "
        "(how processes share the model: ddp, zero2, zero3, fsdp)"
    ]
    done = bench("run", "--dry-run", "-c", settings(tmp_path, "device_memory_gb: 0\n"))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: device_memory_gb must be positive, got 0.0"


# ------------------------------------------------------------------ the arithmetic, in this process

SHAPE_8B = Shape(QWEN3_8B_PARAMETERS, 4096, 12288, 36, 32, 151936, weight_bytes=4)


def test_sharding_divides_what_each_strategy_shards() -> None:
    work = Workload(QWEN3_8B_PARAMETERS, 0, 0.0, examples=8, seq_len=1024, activation_bytes=2, processes=8)
    ddp = estimate(SHAPE_8B, work, 80 * GB)
    zero2 = estimate(SHAPE_8B, Workload(**{**work.__dict__, "strategy": "zero2"}), 80 * GB)
    zero3 = estimate(SHAPE_8B, Workload(**{**work.__dict__, "strategy": "zero3"}), 80 * GB)
    assert ddp.weights + ddp.gradients + ddp.optimizer == pytest.approx(16 * QWEN3_8B_PARAMETERS)  # fp32 + AdamW
    assert zero2.weights == ddp.weights and zero2.gradients == ddp.gradients / 8 == zero3.gradients
    assert zero3.weights == ddp.weights / 8 and zero3.optimizer == ddp.optimizer / 8
    assert ddp.activations == zero3.activations  # one sequence a process in every case
    assert not ddp.fits and zero3.fits


def test_refusal_names_nothing_when_nothing_fits() -> None:
    work = Workload(QWEN3_8B_PARAMETERS, 0, 0.0, examples=1, seq_len=1024, activation_bytes=2)
    with pytest.raises(BenchError, match="nothing simple fits") as refused:
        check(SHAPE_8B, work, 1 * GB, None)
    assert "\n" not in str(refused.value)


def test_memory_settings_leave_the_fingerprint_alone() -> None:
    from plasticity_bench.harness.app.config import RunConfig

    assert (
        RunConfig(strategy="zero3", device_memory_gb=80, seq_len_bound=512).fingerprint() == RunConfig().fingerprint()
    )


def test_which_methods_keep_a_reference_and_how_many_sequences() -> None:
    from plasticity_bench.harness.app.config import RunConfig
    from plasticity_bench.harness.app.memory import memory_plan
    from plasticity_bench.harness.app.stages.prepare import with_method_defaults
    from plasticity_bench.trainers.common import TRAINERS

    def plan(method: str, **options: object):
        config = with_method_defaults(RunConfig(method=method, options=dict(options)))
        trainer_class = TRAINERS.get(method)
        from plasticity_bench.harness.app.config import method_options

        return memory_plan(config, trainer_class(method_options(trainer_class.Options, config.options, method))).work

    sft, grpo, l2sp, spot = plan("sft"), plan("grpo"), plan("l2sp"), plan("spot")
    assert (sft.reference, sft.examples, sft.per_example) == (0, 32, 1)
    assert (grpo.reference, grpo.examples) == (sft.trained, 64)  # π_ref; 8 prompts × 8 samples
    assert l2sp.reference == l2sp.trained  # θ₀
    assert (spot.reference, spot.examples, spot.per_example) == (0, 32, 2)  # π_ref's log-probs precomputed; pairs
    assert plan("dpo", pairs_from="policy").reference == sft.trained
    assert plan("dpo", pairs_from="start").reference == 0
    assert plan("rps", stage2_loss="dpo").per_example == 2


def test_the_attention_matrix_counts_only_for_eager_attention() -> None:
    work = Workload(QWEN3_8B_PARAMETERS, 0, 0.0, examples=1, seq_len=2048, activation_bytes=2)
    fused = estimate(SHAPE_8B, work, 80 * GB).activations
    eager = estimate(Shape(**{**SHAPE_8B.__dict__, "eager_attention": True}), work, 80 * GB).activations
    assert eager - fused == pytest.approx(2048 * 36 * 32 * 2048 * 2)  # one a×s×s matrix a layer, bf16


def test_gradient_checkpointing_keeps_each_layers_input_and_one_layer() -> None:
    # per token: 36 layer inputs of h, one layer's 17·h + 4·i, in bf16; plus 3·V float32 logits; 2,048 tokens
    plain = Workload(QWEN3_8B_PARAMETERS, 0, 0.0, examples=1, seq_len=2048, activation_bytes=2)
    checkpointed = estimate(SHAPE_8B, Workload(**{**plain.__dict__, "checkpointing": True}), 80 * GB)
    per_token = (36 * 4096 + 17 * 4096 + 4 * 12288) * 2 + 3 * 151936 * 4
    assert checkpointed.activations == pytest.approx(2048 * per_token)
    assert estimate(SHAPE_8B, plain, 80 * GB).activations == pytest.approx(
        2048 * (36 * (17 * 4096 + 4 * 12288) * 2 + 3 * 151936 * 4)
    )


def test_dry_run_counts_gradient_checkpointing(bench, qwen3_8b: Path, tmp_path: Path) -> None:
    tables = {}
    for checkpointing in ("false", "true"):
        config = settings(tmp_path, ONE_GPU + f"lora: {{r: 8}}\ngradient_checkpointing: {checkpointing}\n")
        done = bench("run", "--method", "sft", "--model", str(qwen3_8b), "-c", config, "--dry-run", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        tables[checkpointing] = table_of(done.stdout)
    assert tables["false"]["activations"] == "38.76 GB"  # as test_accepts_8b_with_lora_and_dry_run_writes_nothing
    # 2,048 tokens × ((36 · 4096 + 17 · 4096 + 4 · 12288) · 4 bytes (float32: no autocast here) + 3 · 151936 · 4)
    assert tables["true"]["activations"] == "5.92 GB"
    assert tables["true"]["weights"] == tables["false"]["weights"]


def test_sharded_processes_hold_the_whole_model_before_sharding_it() -> None:
    """A 32B model in fp32 over 8 processes: its shards fit 80 GB, the whole model each process loads first does not."""
    shape = Shape(32_000_000_000, 5120, 25600, 64, 64, 151936, weight_bytes=4)
    work = Workload(10**9, 0, 0.0, examples=8, seq_len=512, activation_bytes=2, strategy="fsdp", processes=8)
    found = estimate(shape, work, 80 * GB)
    assert found.total < 80 * GB < found.whole_before_sharding == 128 * GB and not found.fits
    assert ("whole before sharding", 128 * GB) in found.rows()
    with pytest.raises(BenchError, match="and 128.0 GB while it holds the whole model before sharding it"):
        check(shape, work, 80 * GB, None)
    one = estimate(shape, Workload(**{**work.__dict__, "processes": 1}), 80 * GB)
    ddp = estimate(shape, Workload(**{**work.__dict__, "strategy": "ddp"}), 80 * GB)
    assert one.whole_before_sharding == ddp.whole_before_sharding == 0  # nothing sharded: the weights row is whole


def test_gradient_checkpointing_is_named_when_it_alone_would_fit() -> None:
    work = Workload(QWEN3_8B_PARAMETERS, 0, 0.0, examples=1, seq_len=4096, activation_bytes=2, strategy="zero3")
    work = Workload(**{**work.__dict__, "processes": 8})
    assert not estimate(SHAPE_8B, work, 40 * GB).fits
    assert estimate(SHAPE_8B, Workload(**{**work.__dict__, "checkpointing": True}), 40 * GB).fits
    with pytest.raises(BenchError, match=r"would fit: gradient_checkpointing: true \("):
        check(SHAPE_8B, work, 40 * GB, None)
