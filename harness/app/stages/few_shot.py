"""The few-shot recovery probe's generation (tasks/suites/few_shot.py): right after the generate stage,
while every checkpoint is still on disk, each checkpoint answers the probe's items (the same items
with k solved examples first) on the engine that generated the run; `score` then scores them
(harness/evaluation/few_shot.py). Its files live in RUN/few_shot/, apart from the suite's results.

Not a stage of run.json's list: it is done when every checkpoint has its file, so a re-run of the
command finishes it; run.json's `few_shot` records what the probe is and its wall time.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from plasticity_bench.harness.app.stages.generate import checkpoint_rows, generation_groups
from plasticity_bench.harness.app.stages.prompts import prompt_format, rendered
from plasticity_bench.harness.backends import BackendPool
from plasticity_bench.harness.backends.checkpoint import check_prompts_fit, context_length, read_model_config
from plasticity_bench.harness.core.errors import BenchError, warn
from plasticity_bench.harness.core.items import Item
from plasticity_bench.harness.core.progress import progress_bar
from plasticity_bench.harness.evaluation import few_shot as probe
from plasticity_bench.harness.store import RunStore, checkpoint_dir, items_frame, read_manifest, write_parquet_atomic
from plasticity_bench.tasks.prompting import render
from plasticity_bench.tasks.suites import Suite


def few_shot(
    store: RunStore, suite: Suite, items: Sequence[Item], backends: BackendPool, seed: int, quiet: bool
) -> None:
    """Generate the probe's items at every checkpoint that has no probe file yet (nothing without a probe)."""
    if not items:
        return
    keep_items(store, items)
    pending = [r for r in read_manifest(store.checkpoints) if not probe.generation_file(store.root, r.step).exists()]
    if not pending:
        return
    started = time.time()
    backend = backends.get(str(store.metadata()["backend"]))  # the engine the generate stage used
    first = checkpoint_dir(store, read_manifest(store.checkpoints)[0])
    prompts = probe_prompts(store, suite, list(items), first)
    groups = generation_groups(suite, list(items))
    with progress_bar(len(pending), "few-shot probe", quiet) as advance:
        for record in pending:
            model_dir = checkpoint_dir(store, record)
            if not model_dir.is_dir():
                warn(f"few-shot probe: checkpoint step {record.step} of {store.root} is no longer on disk; not probed")
                continue
            backend.load(model_dir)
            rows = checkpoint_rows(backend, model_dir, suite, groups, prompts, seed)
            frame = pd.DataFrame(rows, columns=["item_id", "sample", "output"])
            frame.insert(1, "step", record.step)
            write_parquet_atomic(frame, probe.generation_file(store.root, record.step))
            advance()
    spent = store.metadata().get("few_shot", {}).get("seconds", 0.0) + round(time.time() - started, 2)
    store.update_metadata(few_shot={**store.metadata().get("few_shot", {}), "seconds": round(spent, 2)})


def keep_items(store: RunStore, items: Sequence[Item]) -> None:
    """RUN/few_shot/items.parquet; a folder that holds another probe's items (the suite's probe changed
    and --refresh kept the run) is emptied first, so no completion of another prompt is scored."""
    folder = probe.folder(store.root)
    frame = items_frame(items)
    path = folder / probe.ITEMS
    if path.is_file() and not pd.read_parquet(path).equals(frame):
        shutil.rmtree(folder)
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(frame, path)


def probe_prompts(store: RunStore, suite: Suite, items: list[Item], model_dir: Path) -> dict[str, str]:
    """Every probe prompt as the model sees it (kept in RUN/few_shot/prompts.parquet), checked against
    the model's context: a probe that does not fit is a one-line BenchError naming `few_shot`."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = context_length(read_model_config(model_dir))
    prompts: dict[str, str] = {}
    for slice_ in dict.fromkeys(item.slice for item in items):
        eval_set = suite.eval_set(slice_)
        shown = rendered([item for item in items if item.slice == slice_], eval_set.prompt, tokenizer)
        lengths = [len(tokenizer.encode(item.prompt, add_special_tokens=False)) for item in shown]
        check_prompts_fit(
            lengths,
            eval_set.sampling.max_new_tokens,
            limit,
            f"few-shot probe of {slice_} ({eval_set.few_shot} examples)",
        )
        prompts.update({item.id: item.prompt for item in shown})
    frame = pd.DataFrame({"item_id": list(prompts), "prompt": list(prompts.values())})
    write_parquet_atomic(frame, probe.folder(store.root) / probe.PROMPTS)
    return prompts


def check_probe_fits_organism(max_positions: int, suite: Suite, items: Sequence[Item]) -> None:
    """Before anything runs: the organism's context holds every probe prompt and its completion; else a
    one-line BenchError saying to show fewer examples."""
    from plasticity_bench.harness.app.organism import build_tokenizer

    tokenizer = build_tokenizer()
    for slice_ in dict.fromkeys(item.slice for item in items):
        eval_set = suite.eval_set(slice_)
        fmt = prompt_format(eval_set.prompt, tokenizer)  # raw text: the organism has no chat template
        longest = max(
            len(tokenizer.encode(render(fmt, item, None), add_special_tokens=False))
            for item in items
            if item.slice == slice_
        )
        budget = eval_set.sampling.max_new_tokens
        if longest + budget > max_positions:
            raise BenchError(
                f"{eval_set.source.where} ({slice_}): few_shot: {eval_set.few_shot} makes prompts of up to {longest} "
                f"tokens, and {budget} more are generated, but the organism's context is {max_positions} "
                "(organism.max_positions); show fewer examples"
            )
