"""The kl stage: KL(π₀‖π_step) at every checkpoint on the hard training prompts
(harness/evaluation/kl.py); run.json records the final checkpoint's value (`bench run` only)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.app.stages.prepare import PreparedRun
from plasticity_bench.harness.app.stages.prompts import rendered
from plasticity_bench.harness.evaluation.kl import KL_PROMPTS, kl_to_start
from plasticity_bench.harness.store import RunStore
from plasticity_bench.tasks.suites.items import training_items
from plasticity_bench.tasks.verify import max_new_tokens


def kl(store: RunStore, run: PreparedRun, base_model: Path) -> None:
    """Measure KL to the start unless done."""
    if not store.stage_done("kl"):
        timed(store, "kl", lambda: kl_stage(store, run, base_model))


def kl_stage(store: RunStore, run: PreparedRun, base_model: Path) -> dict:
    assert run.suite.hard is not None, "prepare() checks the suite can train"
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    hard = training_items(run.suite, run.suite.hard, run.config.train_examples, run.config.seed, run.evaluation.prompts)
    items = rendered(hard, run.suite.hard.prompt, tokenizer)
    prompts = items[:KL_PROMPTS]
    frame = kl_to_start(
        store,
        [item.prompt for item in prompts],
        max(max_new_tokens(item) for item in prompts),
        run.config.seed,
        lambda path: path if path.is_absolute() else store.root / path,
    )
    return {"final_kl": float(frame.kl.iloc[-1]), "kl_sequences": int(frame.n.iloc[-1])}
