"""The evaluation or training item: plain data every layer passes around.

Items are plain data, so evaluation sets can be hashed, stored in the run folder and reloaded
without the code that made them; scoring needs only the item and the model's output. The task
that made an item (``tasks/``) is named in ``task``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One prompt with what a correct completion looks like."""

    id: str
    family: str
    task: str
    level: str
    prompt: str
    target: str  # a reference completion (with worked steps where the task has them)
    answer: str  # the final answer the scorer checks
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def slice(self) -> str:
        """The evaluation set it belongs to, as suites, records and reports name it: "task/level"."""
        return f"{self.task}/{self.level}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
