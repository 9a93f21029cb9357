"""Task families. Importing this package registers every task (one module each) in TASKS."""

from plasticity_bench.tasks import arithmetic, programs, strings  # noqa: F401  (registration side effects)
from plasticity_bench.tasks.base import TASKS, Item, Score, Task, content_hash, get_task

__all__ = ["TASKS", "Item", "Score", "Task", "content_hash", "get_task"]
