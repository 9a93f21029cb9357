"""harness/app/sweep.py: from the paths a user gives `bench eval` to an ordered sweep of model folders.

The fast tests build tiny organism-shaped models (Qwen3, character tokenizer) and lay out folders
the way trainers do; the e2e tests run transformers' Trainer (full fine-tuning, and peft LoRA)
for a few steps and read what it wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
from plasticity_bench.harness.app.sweep import SweepPoint, discover_sweep, merge_adapter
from plasticity_bench.harness.core.errors import BenchError

TINY = OrganismConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=32)
LORA_TARGETS = ("q_proj", "v_proj")


def save_organism(folder: Path, config: OrganismConfig = TINY, seed: int = 0) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(OrganismConfig(**{**config.__dict__, "seed": seed}), len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_one_line_error(error: pytest.ExceptionInfo[BenchError], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_organism(tmp_path_factory.mktemp("base") / "organism")


def copy_model(source: Path, target: Path, trainer_step: int | None = None) -> Path:
    shutil.copytree(source, target)
    if trainer_step is not None:
        (target / "trainer_state.json").write_text(json.dumps({"global_step": trainer_step, "log_history": []}))
    return target


def save_adapter(
    base: Path, folder: Path, seed: int, base_name: str | None = "as-loaded", tokenizer: bool = True
) -> Path:
    """A LoRA adapter on q_proj/v_proj with random (non-zero) A and B, as if trained."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(folder)
    if base_name != "as-loaded":
        config_file = folder / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base_name
        config_file.write_text(json.dumps(config))
    if tokenizer:
        AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- layouts (fast)


def test_training_folder_in_step_order_with_base_as_step_0(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (10, 2, 4):  # created out of order; checkpoint-10 sorts before checkpoint-2 by name
        copy_model(base, run / f"checkpoint-{step}", trainer_step=step)
    copy_model(base, run / "final-as-saved-by-save_model")  # not a checkpoint-N name: ignored
    sweep = discover_sweep([run], base_model=base, work_dir=tmp_path / "work")
    assert [point.step for point in sweep] == [0, 2, 4, 10]
    assert sweep[0] == SweepPoint(0, base, base, "model")
    assert [point.model_dir for point in sweep[1:]] == [
        run / "checkpoint-2",
        run / "checkpoint-4",
        run / "checkpoint-10",
    ]
    assert all(point.source == run and point.kind == "model" for point in sweep[1:])
    assert not (tmp_path / "work").exists()  # nothing to merge or link


def test_top_level_model_only_when_steps_says_so(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    copy_model(base, run)  # the final model save_model() writes into the output folder
    for step in (2, 4):
        copy_model(base, run / f"checkpoint-{step}", trainer_step=step)
    assert [point.step for point in discover_sweep([run], work_dir=tmp_path / "w")] == [2, 4]
    # a step no checkpoint has: the folder's own model is added there
    sweep = discover_sweep([run], steps=[5], work_dir=tmp_path / "w")
    assert [(point.step, point.model_dir) for point in sweep] == [
        (2, run / "checkpoint-2"),
        (4, run / "checkpoint-4"),
        (5, run),
    ]
    # the last checkpoint's step: the checkpoint stands for it, nothing is added
    assert [point.step for point in discover_sweep([run], steps=[4], work_dir=tmp_path / "w")] == [2, 4]


def test_checkpoint_folders_and_plain_folders(base: Path, tmp_path: Path) -> None:
    named = copy_model(base, tmp_path / "checkpoint-7")  # no trainer_state.json: the name's N
    stated = copy_model(base, tmp_path / "late", trainer_step=30)  # trainer_state.json in a plain folder
    sweep = discover_sweep([stated, named], work_dir=tmp_path / "w")
    assert [(point.step, point.source) for point in sweep] == [(7, named), (30, stated)]
    plain = [copy_model(base, tmp_path / name) for name in ("a", "b")]
    sweep = discover_sweep(plain, steps=[100, 200], base_model=base, work_dir=tmp_path / "w")
    assert [(point.step, point.model_dir) for point in sweep] == [(0, base), (100, plain[0]), (200, plain[1])]


def test_base_is_not_added_when_a_point_has_step_0(base: Path, tmp_path: Path) -> None:
    other = copy_model(base, tmp_path / "start")
    sweep = discover_sweep([other], steps=[0], base_model=base, work_dir=tmp_path / "w")
    assert [(point.step, point.model_dir) for point in sweep] == [(0, other)]


def test_checkpoint_without_tokenizer_gets_the_training_folders(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    AutoTokenizer.from_pretrained(base).save_pretrained(run)
    checkpoint = copy_model(base, run / "checkpoint-3", trainer_step=3)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (checkpoint / name).unlink()
    [point] = discover_sweep([run], work_dir=tmp_path / "work")
    assert point.model_dir == tmp_path / "work" / "linked" / "step-000003"
    assert (point.model_dir / "model.safetensors").resolve() == (checkpoint / "model.safetensors").resolve()
    assert (
        AutoTokenizer.from_pretrained(point.model_dir)("1+2").input_ids
        == AutoTokenizer.from_pretrained(base)("1+2").input_ids
    )


def test_architecture_check_ignores_dtype_name_and_version(base: Path, tmp_path: Path) -> None:
    other = copy_model(base, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config.update(torch_dtype="bfloat16", dtype="bfloat16", _name_or_path="/elsewhere", transformers_version="9.9.9")
    (other / "config.json").write_text(json.dumps(config))
    assert len(discover_sweep([other], steps=[1], base_model=base, work_dir=tmp_path / "w")) == 2


# ---------------------------------------------------------------- LoRA (fast: adapters with random weights)


@pytest.mark.slow
def test_lora_adapters_merge_to_base_plus_scaled_BA(base: Path, tmp_path: Path) -> None:
    adapters = [save_adapter(base, tmp_path / f"adapter-{step}", seed=step) for step in (1, 2)]
    sweep = discover_sweep(adapters, steps=[10, 20], work_dir=tmp_path / "work")  # base from adapter_config.json
    assert [(point.step, point.kind, point.source) for point in sweep] == [
        (10, "lora", adapters[0]),
        (20, "lora", adapters[1]),
    ]
    assert [point.model_dir for point in sweep] == [
        tmp_path / "work" / "merged" / "step-000010",
        tmp_path / "work" / "merged" / "step-000020",
    ]

    before = weights(base)
    for point, adapter in zip(sweep, adapters):
        after = weights(point.model_dir)
        assert set(after) == set(before)  # a plain model: no lora_ tensors, no base_model. prefix
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed == {
            f"model.layers.{i}.self_attn.{target}.weight" for i in range(TINY.num_layers) for target in LORA_TARGETS
        }
        lora = load_file(str(adapter / "adapter_model.safetensors"))
        prefix = "base_model.model.model.layers.1.self_attn.v_proj"
        delta = lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"] * (8 / 4)  # lora_alpha / r
        torch.testing.assert_close(
            after["model.layers.1.self_attn.v_proj.weight"], before["model.layers.1.self_attn.v_proj.weight"] + delta
        )
        model = AutoModelForCausalLM.from_pretrained(point.model_dir)
        assert type(model).__name__ == "Qwen3ForCausalLM"
        assert AutoTokenizer.from_pretrained(point.model_dir).eos_token == "<|endoftext|>"
    query = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights(sweep[0].model_dir)[query], weights(sweep[1].model_dir)[query])


@pytest.mark.slow
def test_merged_folder_is_reused_until_the_adapter_changes(base: Path, tmp_path: Path) -> None:
    adapter = save_adapter(base, tmp_path / "adapter", seed=1)
    target = tmp_path / "merged"
    merge_adapter(adapter, base, target)
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    merge_adapter(adapter, base, target)
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp
    shutil.rmtree(adapter)
    save_adapter(base, adapter, seed=2)
    merge_adapter(adapter, base, target)
    assert (target / "model.safetensors").stat().st_mtime_ns != stamp


def test_explicit_base_wins_and_tokenizer_falls_back_to_it(base: Path, tmp_path: Path) -> None:
    adapter = save_adapter(base, tmp_path / "checkpoint-5", seed=3, base_name="/gone/organism", tokenizer=False)
    [zero, five] = discover_sweep([adapter], base_model=base, work_dir=tmp_path / "w")
    assert (zero.step, zero.model_dir, five.step, five.kind) == (0, base, 5, "lora")
    assert (
        AutoTokenizer.from_pretrained(five.model_dir)("7").input_ids
        == AutoTokenizer.from_pretrained(base)("7").input_ids
    )


# ---------------------------------------------------------------- bad input: one line naming the problem


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BenchError) as error:
        discover_sweep([tmp_path / "nope"], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(tmp_path / "nope"), "does not exist")


def test_checkpoint_without_weights(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    copy_model(base, run / "checkpoint-2", trainer_step=2)
    empty = run / "checkpoint-4"
    empty.mkdir()
    shutil.copy(base / "config.json", empty)
    (empty / "global_step4").mkdir()  # what DeepSpeed ZeRO leaves instead of weights
    with pytest.raises(BenchError) as error:
        discover_sweep([run], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(empty), "no weights", "zero_to_fp32")


def test_adapter_without_weights(base: Path, tmp_path: Path) -> None:
    adapter = save_adapter(base, tmp_path / "checkpoint-3", seed=0)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(BenchError) as error:
        discover_sweep([adapter], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(adapter), "no weights")


def test_different_architectures(base: Path, tmp_path: Path) -> None:
    wide = save_organism(tmp_path / "wide", OrganismConfig(**{**TINY.__dict__, "hidden_size": 64}))
    with pytest.raises(BenchError) as error:
        discover_sweep([wide], steps=[3], base_model=base, work_dir=tmp_path / "w")
    assert_one_line_error(error, "different architectures", str(wide), "hidden_size=64", "32")


def test_same_config_different_tensors(base: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    broken = copy_model(base, tmp_path / "checkpoint-9")
    tensors = weights(broken)
    del tensors["lm_head.weight"]  # as if saved with tied embeddings
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BenchError) as error:
        discover_sweep([broken], base_model=base, work_dir=tmp_path / "w")
    assert_one_line_error(error, str(broken), "lm_head.weight")


@pytest.mark.parametrize("named", ["/no/such/organism", "someone/some-model-not-cached", None])
def test_lora_base_missing(base: Path, tmp_path: Path, named: str | None) -> None:
    adapter = save_adapter(base, tmp_path / "adapter", seed=0, base_name=named)
    with pytest.raises(BenchError) as error:
        discover_sweep([adapter], steps=[1], work_dir=tmp_path / "w")
    assert_one_line_error(
        error, str(adapter), "--base", *([named, "nothing can be downloaded"] if named else ["names no base model"])
    )
    assert not (tmp_path / "w").exists()


def test_duplicate_steps(base: Path, tmp_path: Path) -> None:
    first, second = copy_model(base, tmp_path / "a"), copy_model(base, tmp_path / "b")
    with pytest.raises(BenchError) as error:
        discover_sweep([first, second], steps=[5, 5], work_dir=tmp_path / "w")
    assert_one_line_error(error, "duplicate step 5", str(first), str(second))
    checkpoint = copy_model(base, tmp_path / "checkpoint-5")
    with pytest.raises(BenchError) as error:
        discover_sweep([checkpoint, copy_model(base, tmp_path / "c", trainer_step=5)], work_dir=tmp_path / "w")
    assert_one_line_error(error, "duplicate step 5")


def test_plain_folder_needs_steps(base: Path, tmp_path: Path) -> None:
    plain = copy_model(base, tmp_path / "model")
    with pytest.raises(BenchError) as error:
        discover_sweep([plain], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(plain), "--steps")


def test_steps_count_must_match(base: Path, tmp_path: Path) -> None:
    plain = copy_model(base, tmp_path / "model")
    with pytest.raises(BenchError) as error:
        discover_sweep([plain], steps=[1, 2], work_dir=tmp_path / "w")
    assert_one_line_error(error, "--steps has 2 step(s) but 1 path(s)")


def test_trainer_state_must_agree_with_name_and_steps(base: Path, tmp_path: Path) -> None:
    wrong = copy_model(base, tmp_path / "checkpoint-4", trainer_step=6)
    with pytest.raises(BenchError) as error:
        discover_sweep([wrong], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(wrong), "step 4", "global_step 6")
    right = copy_model(base, tmp_path / "checkpoint-8", trainer_step=8)
    with pytest.raises(BenchError) as error:
        discover_sweep([right], steps=[9], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(right), "step 9", "8")


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(BenchError) as error:
        discover_sweep([tmp_path / "notes"], steps=[1], work_dir=tmp_path / "w")
    assert_one_line_error(error, str(tmp_path / "notes"), "neither a model folder")


# ---------------------------------------------------------------- e2e: what transformers' Trainer writes


class CharData(torch.utils.data.Dataset):
    def __init__(self, tokenizer) -> None:
        self.rows = [tokenizer(f"{a}+{b}={a + b}")["input_ids"] for a in range(4) for b in range(4)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.rows[index % len(self.rows)])
        return {"input_ids": ids, "labels": ids.clone()}


def train(model, tokenizer, out: Path) -> None:
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=100,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=CharData(tokenizer), processing_class=tokenizer)
    trainer.train()
    trainer.save_model()


@pytest.mark.e2e
def test_transformers_trainer_sweep(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "trainer-out"
    train(AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base), run)
    assert sorted(path.name for path in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    sweep = discover_sweep([run], base_model=base, work_dir=tmp_path / "work")
    assert [(point.step, point.kind) for point in sweep] == [(0, "model"), (2, "model"), (4, "model")]
    assert [point.model_dir for point in sweep] == [base, run / "checkpoint-2", run / "checkpoint-4"]
    loaded = [AutoModelForCausalLM.from_pretrained(point.model_dir) for point in sweep]
    assert all(AutoTokenizer.from_pretrained(point.model_dir).pad_token == "<|pad|>" for point in sweep)
    first = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(loaded[0].state_dict()[first], loaded[2].state_dict()[first])  # it trained


@pytest.mark.e2e
def test_peft_trainer_sweep(base: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    run = tmp_path / "lora-out"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
    )
    train(model, AutoTokenizer.from_pretrained(base), run)
    assert all((run / name / "adapter_config.json").is_file() for name in ("checkpoint-2", "checkpoint-4"))
    sweep = discover_sweep([run], base_model=base, work_dir=tmp_path / "work")
    assert [(point.step, point.kind) for point in sweep] == [(0, "model"), (2, "lora"), (4, "lora")]
    before = weights(base)
    for point in sweep[1:]:
        assert point.model_dir == tmp_path / "work" / "merged" / f"step-{point.step:06d}"
        AutoModelForCausalLM.from_pretrained(point.model_dir)
        after = weights(point.model_dir)
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed == {
            f"model.layers.{i}.self_attn.{target}.weight" for i in range(TINY.num_layers) for target in LORA_TARGETS
        }
        # peft's own merge of this checkpoint, for one layer
        reference = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
        )
        set_peft_model_state_dict(
            reference, load_file(str(run / f"checkpoint-{point.step}" / "adapter_model.safetensors"))
        )
        merged = reference.merge_and_unload().state_dict()["model.layers.0.self_attn.q_proj.weight"]
        torch.testing.assert_close(after["model.layers.0.self_attn.q_proj.weight"], merged)
