"""`kind: lmeval`: any lm-eval task by name, or a local task YAML (relative to the suite file, or
one of tasks/lmeval/), run on the run's own engine (harness/evaluation/lmeval_adapter.py) with one
record per document. lm-eval renders its own prompts and computes its own metrics per document;
every one is stored, and `metric` names the item's score (default: the task's first metric, under
its first filter; scorer `lmeval`). See docs/suites.md, "lm-eval tasks".

    source: {kind: lmeval, task: arc_challenge, n: 200}
    source: {kind: lmeval, task: my_task.yaml, metric: acc_norm}
    source: {kind: lmeval, task: gsm8k, metric: "exact_match,flexible-extract"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, item_id

LOCAL_TASKS = Path(__file__).resolve().parents[1] / "lmeval"  # tasks/lmeval: the project's own task YAMLs


@SOURCES.register("lmeval", "an lm-eval task by name or YAML, scored by lm-eval per document")
class LMEvalTask(Source):
    required = ("task",)
    optional = ("metric",)
    default_scorer = "lmeval"
    provides, meta_keys = (
        frozenset({"lmeval_scores"}),
        frozenset({"lmeval_doc_id", "lmeval_task"}),
    )  # scored by lm-eval only
    prompt_settings = sampling_settings = (
        frozenset()
    )  # lm-eval renders its own prompt and uses the task's generation kwargs
    requires = ("lm-eval", "datasets")
    runs_itself = True  # lm-eval renders, generates through the run's engine and scores (evaluation/lmeval_sets.py)

    def task_reference(self) -> str | dict[str, Any]:
        """What lm-eval is given: a built-in task name, or the config of a local YAML."""
        name = str(self.options["task"])
        if name.endswith((".yaml", ".yml")):
            path = Path(name) if Path(name).is_absolute() else self.base_dir / name
            if not path.is_file():
                raise BenchError(f"{self.where}: lm-eval task file {path} does not exist")
            return task_config(str(path))
        return task_config(name)

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        reference = self.task_reference()
        task = build_task(reference, self.where)
        metric = score_metric(task, self.options.get("metric"), self.where)
        items = []
        for doc_id, doc in enumerate(task.eval_docs):
            prompt = task.doc_to_text(doc)
            target = task.doc_to_target(doc)
            choices = task.doc_to_choice(doc) if task.OUTPUT_TYPE == "multiple_choice" else None
            answer = choices[target] if choices is not None and isinstance(target, int) else str(target)
            # what re-scoring needs from the run folder alone: the task (a name or its config) and the score's metric
            meta = {
                "lmeval_doc_id": doc_id,
                "lmeval_task": task.config.task,
                "lmeval_reference": reference,
                "lmeval_metric": metric,
                "lmeval_output_type": task.OUTPUT_TYPE,
                **({"lmeval_choices": [str(c) for c in choices]} if choices is not None else {}),
            }
            items.append(
                Item(
                    item_id(name, split, f"{doc_id}:{prompt}"),
                    family,
                    name,
                    split,
                    str(prompt),
                    str(answer),
                    str(answer),
                    meta,
                )
            )
        return items

    def data_files(self) -> list[Path]:
        """A local task's YAML and the data files it names (a built-in task's data: lm-eval's version and
        its hub cache)."""
        name = str(self.options["task"])
        path = (
            (Path(name) if Path(name).is_absolute() else self.base_dir / name)
            if name.endswith((".yaml", ".yml"))
            else LOCAL_TASKS / f"{name}.yaml"
        )
        if not path.is_file():
            return []
        config = task_config(str(path))
        data_files = config.get("dataset_kwargs", {}).get("data_files") if isinstance(config, dict) else None
        named = (
            list(data_files.values())
            if isinstance(data_files, dict)
            else [data_files]
            if isinstance(data_files, str)
            else []
        )
        return [path, *(Path(file) for file in named if Path(file).is_file())]


def task_metrics(task: Any) -> list[str]:
    """Every per-document metric lm-eval reports for `task`, named as in lm-eval's results:
    `metric,filter` (e.g. `acc,none`, `exact_match,strict-match`), filters in the task's order."""
    filters = [ensemble.name for ensemble in getattr(task, "_filters", [])] or ["none"]
    return [f"{metric},{flt}" for flt in filters for metric in task._metric_fn_list]


def score_metric(task: Any, wanted: Any, where: str) -> str:
    """The metric that is the items' score: `wanted` as `metric` (under the task's first filter)
    or `metric,filter`; the task's first metric when None. It must be a per-document number (lm-eval
    averages it over documents): a one-line error names the choices."""
    from lm_eval.api.metrics import mean

    metrics = task_metrics(task)
    first_filter = metrics[0].split(",", 1)[1]
    short = [m.removesuffix(f",{first_filter}") for m in metrics]
    key = metrics[0] if wanted is None else str(wanted) if "," in str(wanted) else f"{wanted},{first_filter}"
    if key not in metrics:
        raise BenchError(
            f"{where}: lm-eval task {task.config.task!r} reports no metric {wanted!r}; its metrics: {', '.join(short)}"
        )
    averaged = [m for m, name in zip(metrics, short) if task.aggregation().get(m.split(",")[0]) is mean]
    if key not in averaged:  # f1, bleu, perplexity: lm-eval computes them over all documents, not per item
        raise BenchError(
            f"{where}: lm-eval metric {key.split(',')[0]!r} of task {task.config.task!r} is not a "
            f"per-document score "
            f"(lm-eval aggregates it over the documents); set `metric:` to one of: "
            f"{', '.join(m.removesuffix(f',{first_filter}') for m in averaged) or 'none'}"
        )
    return key


def task_config(name_or_path: str) -> str | dict[str, Any]:
    """A built-in task name unchanged, or a local YAML task as a config dict whose `data_files`
    are made absolute (relative to the YAML's folder), so it runs from any working directory."""
    path = Path(name_or_path) if name_or_path.endswith((".yaml", ".yml")) else LOCAL_TASKS / f"{name_or_path}.yaml"
    if not path.is_file():
        return name_or_path
    config = yaml.safe_load(path.read_text())
    data_files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(data_files, dict):
        config["dataset_kwargs"]["data_files"] = {
            split: str((path.parent / file).resolve()) for split, file in data_files.items()
        }
    elif isinstance(data_files, str):
        config["dataset_kwargs"]["data_files"] = str((path.parent / data_files).resolve())
    return config


def task_manager(configs: list[str | dict[str, Any]]) -> Any:
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's thousands of built-in task YAMLs takes ~20 s: only when one is asked for.
    return TaskManager(include_path=str(LOCAL_TASKS), include_defaults=any(isinstance(c, str) for c in configs))


def build_task(reference: str | dict[str, Any], where: str) -> Any:
    try:
        from lm_eval.tasks import get_task_dict
    except ImportError:
        raise BenchError(
            f"{where}: lm-eval is not installed: pip install -e '.[cpu]' (it is in the cpu and gpu extras)"
        ) from None
    try:
        tasks = get_task_dict([reference], task_manager([reference]))
    except Exception as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        label = reference if isinstance(reference, str) else reference.get("task")
        raise BenchError(f"{where}: lm-eval task {label!r} cannot be built here ({first})") from None
    (task,) = _leaves(tasks)
    return task


def _leaves(tasks: dict[Any, Any]) -> list[Any]:
    leaves = []
    for value in tasks.values():
        leaves.extend(_leaves(value) if isinstance(value, dict) else [value])
    if len(leaves) != 1:
        raise BenchError(f"an lm-eval group of {len(leaves)} tasks is not supported; name its tasks one by one")
    return leaves
