"""lm-eval sets (`source: {kind: lmeval}`) in the run folder: what is stored and how it is re-scored.

Generation (harness.app.pipeline.generate_stage) runs lm-eval itself (harness.evaluation.lmeval_adapter):
one generation row per document, whose

- `output` is the model's completion (generate_until) or, for multiple choice, the **chosen
  option's text**: the argmax of lm-eval's per-choice log-likelihoods, normalised as lm-eval
  normalises it for the set's score metric (`acc_norm`: by the option's length in characters,
  `acc_bytes`: in bytes, anything else: raw), exactly as lm-eval decides acc / acc_norm;
- `external_score` is the score metric's value (the suite's `metric:`, default the task's first);
- `lmeval` is a JSON object: `metrics` (every per-document metric lm-eval reported, keyed
  `metric,filter` as in lm-eval's results), `context` (the prompt lm-eval sent), `resps` (lm-eval's
  raw responses per request), `output` (the output as generated), and for multiple choice
  `loglikelihoods` and `chosen` (the option's index).

`bench score` re-scores from those rows (`score_lmeval`): the task is rebuilt from the reference
stored in the items, the stored responses (a generate_until task: the stored *output*, so an
edited output gets its own verdict) go through the task's own filters and `process_results`, as
in lm-eval's evaluator. Where an edited output cannot change the verdict (multiple choice and the
other log-likelihood tasks: the verdict comes from stored log-likelihoods; sampled repeats) or
the task cannot be rebuilt, the stored scores stay and one line on stderr says so per set.

Each Score's answer is what lm-eval's filters made of the response (for the set's metric's
filter, e.g. the number a `strict-match` regex took out of a completion); for multiple choice and
the other log-likelihood tasks, the chosen option's text; empty where nothing was re-filtered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.base import Score

LMEVAL_COLUMN = "lmeval"  # the JSON column of generations of lm-eval sets
REBUILT_LOG_LIKELIHOODS = ("multiple_choice", "loglikelihood", "loglikelihood_rolling")


# ---------------------------------------------------------------- generation


def generation_rows(samples: Sequence[dict[str, Any]], items: Sequence[Item]) -> list[dict[str, Any]]:
    """lm-eval's logged samples (one per document and filter) → one generation row per item."""
    by_doc = {int(item.meta["lmeval_doc_id"]): item for item in items}
    per_doc: dict[int, list[dict[str, Any]]] = {}
    for sample in samples:
        per_doc.setdefault(int(sample["doc_id"]), []).append(sample)
    rows = []
    for doc_id, doc_samples in sorted(per_doc.items()):
        if doc_id in by_doc:
            rows.append(document_row(by_doc[doc_id], doc_samples))
    return rows


def document_row(item: Item, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    first = samples[0]
    metrics = {f"{name},{sample['filter']}": plain(sample[name]) for sample in samples for name in sample["metrics"]}
    key = item.meta["lmeval_metric"]
    score = metrics.get(key)
    if not is_number(score):
        numeric = [name for name, value in metrics.items() if is_number(value)]
        raise BenchError(
            f"lm-eval metric {key!r} of task {item.meta['lmeval_task']!r} is not a per-document number "
            f"(lm-eval aggregates it over documents); choose `metric:` among {', '.join(numeric) or 'none'}"
        )
    stored: dict[str, Any] = {
        "metrics": metrics,
        "context": str(first["arguments"][0][0]),
        "resps": plain(first["resps"]),
    }
    if item.meta["lmeval_output_type"] == "multiple_choice":
        choices = [str(choice) for choice in item.meta["lmeval_choices"]]
        lls = [float(request[0][0]) for request in first["resps"]][
            : len(choices)
        ]  # acc_mutual_info appends unconditional ones
        chosen = chosen_option(lls, choices, key.split(",")[0])
        output = choices[chosen]
        stored.update(loglikelihoods=lls, chosen=chosen)
    else:
        response = first["resps"][0][0] if first["resps"] and first["resps"][0] else ""
        output = response if isinstance(response, str) else json.dumps(plain(first["filtered_resps"]))
    stored["output"] = output
    return {
        "item_id": item.id,
        "sample": 0,
        "output": output,
        "external_score": float(score),  # type: ignore[arg-type]
        LMEVAL_COLUMN: json.dumps(stored, sort_keys=True),
    }


def chosen_option(lls: Sequence[float], choices: Sequence[str], metric: str) -> int:
    """The option lm-eval's `metric` picks: argmax of the log-likelihoods, per character for
    acc_norm and per byte for acc_bytes (lm-eval's ConfigurableTask.process_results)."""
    values = np.array(lls, dtype=float)
    if metric == "acc_norm":
        values = values / np.array([float(len(c)) for c in choices])
    elif metric == "acc_bytes":
        values = values / np.array([float(len(c.encode("utf-8"))) for c in choices])
    return int(np.argmax(values))


def contexts(reference: str | dict[str, Any], limit: int, seed: int) -> dict[int, str]:
    """doc_id → the prompt lm-eval sends for each of the first `limit` documents (for multiple
    choice: the context shared by every option), built as simple_evaluate builds it in
    harness.evaluation.lmeval_adapter (no chat template, the task's few-shot count, `seed` for
    the few-shot draw)."""
    task, instances = prepared_task(reference, seed, limit)
    return {int(inst.doc_id): str(inst.args[0]) for inst in instances if inst.idx == 0}


def prepared_task(reference: str | dict[str, Any], seed: int, limit: int | None = None) -> tuple[Any, tuple[Any, ...]]:
    """The task and its requests (lm-eval `Instance`s) for the first `limit` documents, built as
    lm-eval's evaluator builds them."""
    from plasticity_bench.tasks.sources.lmeval import build_task

    task = build_task(reference, "lm-eval task")
    if task.get_config("num_fewshot") is None:  # simple_evaluate's default when the task names none
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=seed)
    task.build_all_requests(limit=limit, rank=0, world_size=1)  # its bar: hidden by the CLI's TQDM_DISABLE
    return task, tuple(task.instances)


# ---------------------------------------------------------------- re-scoring


@dataclass
class Note:
    """Why a set keeps generation-time scores, and how many edited outputs that concerns; said on
    stderr where an output was edited, or `always` (nothing tells whether one was)."""

    reason: str
    edited: int = 0
    always: bool = False


def score_lmeval(
    items: list[Item], outputs: list[str], generations: pd.DataFrame
) -> tuple[list[Score], list[str], Note | None]:
    """Scores, per-record metrics (JSON) and a note for one lm-eval set at one checkpoint."""
    stored_column: list[Any] = list(generations[LMEVAL_COLUMN]) if LMEVAL_COLUMN in generations else [None] * len(items)
    kept = (
        [float(v) for v in generations.external_score]
        if "external_score" in generations
        else [float("nan")] * len(items)
    )
    if not all(isinstance(s, str) and s for s in stored_column):
        old = Note("generated without lm-eval's per-document data, so its generation-time scores are kept", always=True)
        return verdicts(kept), ["" for _ in items], old
    stored: list[dict[str, Any]] = [json.loads(s) for s in stored_column]
    edited = sum(output != s["output"] for output, s in zip(outputs, stored))
    output_type = items[0].meta["lmeval_output_type"]
    use_outputs = output_type == "generate_until" and all(len(s["resps"][0]) == 1 for s in stored)
    chosen = ["" if output_type == "generate_until" else str(s["output"]) for s in stored]  # a chosen option's text
    filtered: list[dict[str, Any]] = [{} for _ in items]
    try:
        metrics = recompute(items, outputs if use_outputs else None, stored, filtered)
    except Exception as error:  # anything lm-eval raises while rebuilding: the stored scores stand, said once
        reason = (
            f"its lm-eval task cannot be rebuilt here ({first_line(error)}), so its generation-time scores are kept"
        )
        return verdicts(kept, chosen), [json.dumps(s["metrics"], sort_keys=True) for s in stored], Note(reason, edited)
    key = items[0].meta["lmeval_metric"]
    answers = chosen if output_type != "generate_until" else [filtered_answer(f, key) for f in filtered]
    note: Note | None = None
    if edited and not use_outputs:
        how = (
            "from the stored log-likelihoods"
            if output_type in REBUILT_LOG_LIKELIHOODS
            else "from lm-eval's sampled responses"
        )
        note = Note(f"lm-eval's verdicts of this {output_type} task come {how}, not from the output text", edited)
    return verdicts([float(m[key]) for m in metrics], answers), [json.dumps(m, sort_keys=True) for m in metrics], note


def filtered_answer(filtered: dict[str, Any], metric_key: str) -> str:
    """The filtered response of the metric's filter (`metric,filter`; else the first filter), as text."""
    name = metric_key.split(",", 1)[1] if "," in metric_key else next(iter(filtered), "")
    value = filtered.get(name, "")
    return value if isinstance(value, str) else json.dumps(plain(value))


def recompute(
    items: list[Item],
    outputs: list[str] | None,
    stored: list[dict[str, Any]],
    filtered: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every metric per item, by lm-eval's own filters and process_results, from the stored
    responses; `outputs` replace a generate_until task's completions. `filtered`, when given,
    receives each item's filtered response (of its first request) per filter."""
    reference = items[0].meta["lmeval_reference"]
    docs = {int(item.meta["lmeval_doc_id"]): index for index, item in enumerate(items)}
    task, every = cached_task(json.dumps(reference, sort_keys=True), max(docs) + 1)
    instances = [inst for inst in every if int(inst.doc_id) in docs]
    for inst in instances:
        index = docs[int(inst.doc_id)]
        if str(task.doc_to_text(inst.doc)) != items[index].prompt:  # the task's data changed since the run
            raise BenchError(f"document {inst.doc_id} differs from the run's item {items[index].id}")
        responses = stored[index]["resps"][inst.idx]
        inst.resps = (
            [outputs[index]] if outputs is not None else [tuple(r) if isinstance(r, list) else r for r in responses]
        )
        inst.filtered_resps = {}
    task._instances = instances
    task.apply_filters()
    per_doc: dict[int, list[Any]] = {}
    for inst in instances:
        per_doc.setdefault(int(inst.doc_id), []).append(inst)
    metrics: list[dict[str, Any]] = [{} for _ in items]
    for doc_id, requests in per_doc.items():
        requests.sort(key=lambda inst: inst.idx)
        for name in requests[0].filtered_resps:
            if filtered is not None:
                filtered[docs[doc_id]][name] = requests[0].filtered_resps[name]
            values = task.process_results(requests[0].doc, [inst.filtered_resps[name] for inst in requests])
            metrics[docs[doc_id]].update({f"{metric},{name}": plain(value) for metric, value in values.items()})
    missing = [items[index].id for doc_id, index in docs.items() if doc_id not in per_doc]
    if missing:
        raise BenchError(f"the task has no document for item {missing[0]}")
    return metrics


@lru_cache(maxsize=8)
def cached_task(reference_json: str, limit: int) -> tuple[Any, tuple[Any, ...]]:
    """Rebuilding a task reads its data: once per task while a run is scored (every checkpoint)."""
    return prepared_task(
        json.loads(reference_json), seed=0, limit=limit
    )  # the few-shot draw changes contexts, not verdicts


def verdicts(values: Sequence[float], answers: Sequence[str] | None = None) -> list[Score]:
    return [Score(value, value >= 1.0, "", answer) for value, answer in zip(values, answers or [""] * len(values))]


def metric_means(records: pd.DataFrame) -> str:
    """Every numeric lm-eval metric's mean over records, in points, as JSON ("" for other sets)."""
    if "metrics" not in records:
        return ""
    parsed = [json.loads(m) for m in records.metrics if isinstance(m, str) and m]
    if not parsed or len(parsed) != len(records):
        return ""
    names = [name for name in parsed[0] if all(is_number(p.get(name)) for p in parsed)]
    return json.dumps({name: 100 * float(np.mean([float(p[name]) for p in parsed])) for name in names})


# ---------------------------------------------------------------- helpers


def plain(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars → Python numbers, tuples → lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool too: some metrics are True/False per document


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
