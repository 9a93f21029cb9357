"""`kind: lmeval`: any lm-eval task by name, or a local task YAML (relative to the suite file, or
one of tasks/lmeval/), run on the run's own engine (harness/evaluation/lmeval_adapter.py) with one
record per document. lm-eval renders its own prompts and computes its own metric per document
(the first of the task's metrics is the item's score; scorer `lmeval`).

    source: {kind: lmeval, task: arc_challenge, n: 200}
    source: {kind: lmeval, task: my_task.yaml}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import BenchError
from harness.core.items import Item
from tasks.sources import SOURCES, Source, item_id

LOCAL_TASKS = Path(__file__).resolve().parents[1] / "lmeval"  # tasks/lmeval: the project's own task YAMLs


@SOURCES.register("lmeval", "an lm-eval task by name or YAML, scored by lm-eval per document")
class LMEvalTask(Source):
    required = ("task",)
    default_scorer = "lmeval"

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
        task = build_task(self.task_reference(), self.where)
        items = []
        for doc_id, doc in enumerate(task.eval_docs):
            prompt = task.doc_to_text(doc)
            target = task.doc_to_target(doc)
            choices = task.doc_to_choice(doc) if task.OUTPUT_TYPE == "multiple_choice" else None
            answer = choices[target] if choices is not None and isinstance(target, int) else str(target)
            meta = {"lmeval_doc_id": doc_id, "lmeval_task": task.config.task}
            items.append(Item(item_id(name, split, f"{doc_id}:{prompt}"), family, name, split, str(prompt), str(answer), str(answer), meta))
        return items


def task_config(name_or_path: str) -> str | dict[str, Any]:
    """A built-in task name unchanged, or a local YAML task as a config dict whose `data_files`
    are made absolute (relative to the YAML's folder), so it runs from any working directory."""
    path = Path(name_or_path) if name_or_path.endswith((".yaml", ".yml")) else LOCAL_TASKS / f"{name_or_path}.yaml"
    if not path.is_file():
        return name_or_path
    config = yaml.safe_load(path.read_text())
    data_files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(data_files, dict):
        config["dataset_kwargs"]["data_files"] = {split: str((path.parent / file).resolve()) for split, file in data_files.items()}
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
        raise BenchError(f"{where}: lm-eval is not installed: pip install -e '.[cpu]' (it is in the cpu and gpu extras)") from None
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
