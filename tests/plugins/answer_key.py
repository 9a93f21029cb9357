"""A backend that answers from a key the test wrote, so a test chooses the model's exact outputs and
`bench eval` scores them through the real pipeline (tests/test_code_suites.py).

The JSON file that ANSWER_KEY_FILE names maps a marker (text of a prompt) to completions; a prompt
gets the completions of the longest marker it contains, cycled to the `n` samples asked for, and
an empty completion when it contains none. It loads no model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from plasticity_bench.harness.backends.base import BACKENDS, GenerationBackend, SamplingParams

KEY_FILE_ENV = "ANSWER_KEY_FILE"


@BACKENDS.register("answer-key", "answers each prompt from the JSON key file ANSWER_KEY_FILE names (tests)")
class AnswerKey(GenerationBackend):
    def load(self, model_dir: Path) -> None:
        """Nothing to load: the key, not a model, answers."""

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        key: dict[str, list[str]] = json.loads(Path(os.environ[KEY_FILE_ENV]).read_text())
        markers = sorted(key, key=len, reverse=True)
        completions = []
        for prompt in prompts:
            answers = next((key[marker] for marker in markers if marker in prompt), [""])
            completions.append([answers[sample % len(answers)] for sample in range(params.n)])
        return completions
