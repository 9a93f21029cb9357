"""A user's own suite, written by the tests: GSM8K- and MATH-500-shaped jsonl files, HumanEval,
and a local lm-eval YAML task, with easy and hard training files (none of it shipped)."""

from __future__ import annotations

import json
from pathlib import Path

GSM8K_ROWS = [
    {
        "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
        "answer": f"Tom has {a} apples. He buys {b} more, so {a} + {b} = {a + b}.\n#### {a + b}",
    }
    for a, b in [(3, 4), (10, 5), (7, 8), (12, 30), (1, 1), (6, 9), (20, 22), (15, 15)]
]
MATH500_ROWS = [
    {"problem": "Simplify $\\frac{6}{8}$.", "solution": "Divide by 2: $\\frac{3}{4}$.", "answer": "\\frac{3}{4}"},
    {"problem": "What is $\\sqrt{16}$?", "solution": "$4^2 = 16$, so $\\boxed{4}$.", "answer": "4"},
    {"problem": "Solve $2x = 10$.", "solution": "$x = 5$.", "answer": "5"},
    {"problem": "Compute $3^3$.", "solution": "$27$.", "answer": "27"},
    {"problem": "Find the interval where $x^2 < 1$.", "solution": "$(-1, 1)$.", "answer": "(-1,1)"},
    {"problem": "What is $\\pi$ rounded to two decimals?", "solution": "$3.14$.", "answer": "3.14"},
]
LMEVAL_ROWS = [
    {"prompt": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in [(1, 2), (2, 2), (3, 4), (5, 5), (6, 1)]
]
LMEVAL_TASK = """task: my_local_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: sums.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
SUITE = """name: my-suite
description: a user's own suite (tests)
eval_seed: 7
defaults:
  prompt: {chat: true, enable_thinking: false, system: "Answer briefly."}
  sampling: {max_new_tokens: 24}
families:
  grade-school: the training target (GSM8K-shaped)
  competition: held-out competition math (MATH-500-shaped)
  programs: held-out program synthesis (HumanEval, executed)
  sums: held-out lm-eval task
eval:
  - name: gsm8k
    family: grade-school
    role: target
    source: {kind: file, path: gsm8k_test.jsonl, fields: {prompt: question, target: answer, answer: {field: answer, pattern: "####\\\\s*(.+?)\\\\s*$"}}}
    scorer: math_verify
    published: {"A paper's model": 42.5}
  - name: math500
    family: competition
    source: {kind: file, path: math500.jsonl, fields: {prompt: problem, target: solution, answer: answer}}
    sampling: {temperature: 0.8, n: 2}
    scorer: math_verify
  - name: humaneval
    family: programs
    source: {kind: humaneval, n: 3}
    prompt: {chat: false, enable_thinking: null, system: null}
    sampling: {max_new_tokens: 16}
  - name: sums
    family: sums
    source: {kind: lmeval, task: my_local_sums.yaml}
train:
  easy: {source: {kind: file, path: gsm8k_train.jsonl, fields: {prompt: question, target: answer, answer: {field: answer, pattern: "####\\\\s*(.+?)\\\\s*$"}}}, scorer: math_verify}
  hard: {source: {kind: file, path: math_train.jsonl, fields: {prompt: problem, target: solution, answer: answer}}, scorer: math_verify}
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_suite(folder: Path) -> Path:
    """The suite YAML and every data file it names, in `folder`; returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "gsm8k_test.jsonl", GSM8K_ROWS[:4])
    write_jsonl(folder / "gsm8k_train.jsonl", GSM8K_ROWS[4:])
    write_jsonl(folder / "math500.jsonl", MATH500_ROWS[:4])
    write_jsonl(folder / "math_train.jsonl", MATH500_ROWS[4:])
    write_jsonl(folder / "sums.jsonl", LMEVAL_ROWS)
    (folder / "my_local_sums.yaml").write_text(LMEVAL_TASK)
    suite = folder / "my-suite.yaml"
    suite.write_text(SUITE)
    return suite
