"""Prompts as the model sees them (its chat template, system prompt, few-shot turns), for the
train, kl and generate stages, and `prompts.parquet`, the generate stage's record of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoTokenizer

from plasticity_bench.harness.backends.checkpoint import check_prompts_fit, context_length, read_model_config
from plasticity_bench.harness.core.errors import warn
from plasticity_bench.harness.store import PROMPTS_FILE, RunStore
from plasticity_bench.tasks.base import Item
from plasticity_bench.tasks.prompting import PromptFormat, render
from plasticity_bench.tasks.suites import EvalSet, Suite


def eval_set_of(suite: Suite, item: Item) -> EvalSet:
    return suite.eval_set(item.slice)


def rendered(items: list[Item], prompt: dict, tokenizer: Any) -> list[Item]:
    """Items whose prompt is the exact text the model sees (its chat template, system prompt, few-shot turns)."""
    fmt = prompt_format(prompt, tokenizer)
    return [replace(item, prompt=render(fmt, item, tokenizer)) for item in items]


def prompt_format(prompt: dict, tokenizer: Any) -> PromptFormat:
    """The set's prompt format; `chat` falls back to raw text for a tokenizer without a chat template."""
    fmt = PromptFormat.from_mapping(prompt)
    return (
        replace(fmt, chat=False, enable_thinking=None)
        if fmt.chat and not getattr(tokenizer, "chat_template", None)
        else fmt
    )


def raw_instead_of_chat(prompt: dict, tokenizer: Any) -> str | None:
    """What a set that asks for chat mode gets from a tokenizer without a chat template (None when
    it gets what it asks for): the raw-text rendering, described as the prompts.parquet reader sees it."""
    fmt = PromptFormat.from_mapping(prompt)
    if not fmt.chat or getattr(tokenizer, "chat_template", None):
        return None
    parts = [
        part
        for part, present in (
            ("the system prompt as a first paragraph", fmt.system is not None),
            ("the few-shot turns as plain text", bool(fmt.fewshot)),
        )
        if present
    ]
    return "raw text" + (f" with {' and '.join(parts)}" if parts else "")


def note_chat_fallback(
    store: RunStore, prompts: dict[str, dict], tokenizer: Any, model_dir: Path, what: str = "evaluation"
) -> None:
    """One warning line, and run.json's `chat_fallback` (`chat_fallback_training` for `what`
    "training"), for the sets (name → prompt mapping) whose chat mode the model cannot honour: they
    are scored or trained on another prompt than the suite asked for, which a reader must know."""
    raw = {name: raw_instead_of_chat(prompt, tokenizer) for name, prompt in prompts.items()}
    instead = {name: how for name, how in raw.items() if how is not None}
    if not instead:
        return
    key = "chat_fallback" if what == "evaluation" else f"chat_fallback_{what}"
    store.update_metadata(**{key: {"model": str(model_dir), "sets": instead}})
    by_how: dict[str, list[str]] = {}
    for name, how in instead.items():
        by_how.setdefault(how, []).append(name)
    described = "; ".join(f"{', '.join(names)}: {how}" for how, names in by_how.items())
    warn(
        f"model {model_dir} has no chat template, so the {what} sets that ask for chat mode get raw text instead "
        f"({described}); set `prompt: {{chat: false}}` in the suite to ask for raw text"
    )


def write_prompts(store: RunStore, suite: Suite, items: list[Item], model_dir: Path, seed: int = 0) -> dict[str, str]:
    """Render every evaluation prompt once, with the model's own tokenizer, and keep them in the
    run folder (`prompts.parquet`), so a reader can audit exactly what the model saw. lm-eval
    sets (sources that `runs_itself`): the prompt lm-eval sends (its own rendering and few-shot draw at `seed`)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    by_set: dict[str, list[Item]] = {}
    for item in items:
        by_set.setdefault(item.slice, []).append(item)
    prompts: dict[str, str] = {}
    for slice_, set_items in by_set.items():
        eval_set = suite.eval_set(slice_)
        if eval_set.source.runs_itself:
            prompts.update(lmeval_prompts(eval_set, set_items, seed))
            continue
        for item in rendered(set_items, eval_set.prompt, tokenizer):
            prompts[item.id] = item.prompt
    store.write_table(PROMPTS_FILE, pd.DataFrame({"item_id": list(prompts), "prompt": list(prompts.values())}))
    check_fit(suite, by_set, prompts, tokenizer, model_dir)
    # after the checks (a refused run says only why); lm-eval sets are left out: lm-eval renders their prompts itself
    own = {slice_: suite.eval_set(slice_).prompt for slice_ in by_set if not suite.eval_set(slice_).source.runs_itself}
    note_chat_fallback(store, own, tokenizer, model_dir)
    return prompts


def check_fit(
    suite: Suite, by_set: dict[str, list[Item]], prompts: dict[str, str], tokenizer: Any, model_dir: Path
) -> None:
    """BenchError when a set's longest prompt and its generation budget exceed the model's context."""
    limit = context_length(read_model_config(model_dir))
    for slice_, set_items in by_set.items():
        if suite.eval_set(slice_).source.runs_itself:
            continue  # lm-eval's own budget (max_gen_toks) is checked per request by the adapter
        lengths = [len(tokenizer.encode(prompts[item.id], add_special_tokens=False)) for item in set_items]
        check_prompts_fit(
            lengths,
            suite.eval_set(slice_).sampling.max_new_tokens,
            limit,
            f"evaluation set {slice_} on model {model_dir}",
        )


def lmeval_prompts(eval_set: EvalSet, items: list[Item], seed: int) -> dict[str, str]:
    """item id → the context lm-eval sends for it (what prompts.parquet stores for an lm-eval set)."""
    from plasticity_bench.harness.evaluation.lmeval_sets import contexts

    limit = max(item.meta["lmeval_doc_id"] for item in items) + 1
    by_doc = contexts(eval_set.source.task_reference(), limit, seed)  # type: ignore[attr-defined]
    return {item.id: by_doc[item.meta["lmeval_doc_id"]] for item in items}
