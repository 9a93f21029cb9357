"""tasks/prompting.py: the text the model sees (chat template or raw) and thinking stripped from answers.

Chat mode is checked against a real Hugging Face tokenizer with a Qwen3-style template (the tiny
model of tests/chat_model.py), loaded from its folder as any model would be; raw mode against
the organism's character-level tokenizer, which has no template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from plasticity_bench.harness.app.organism import build_tokenizer
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.prompting import PromptFormat, render, strip_thinking
from tests.chat_model import build_chat_model

EMPTY_THINK = "<think>\n\n</think>\n\n"
ITEM = Item("add-easy-1", "math", "add", "easy", "12+30=", "42", "42", {"a": 12, "b": 30})
FEWSHOT = (("1+1=", "2"), ("2+5=", "7"))


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chat_model(tmp_path_factory.mktemp("chat-model") / "model")


@pytest.fixture(scope="module")
def chat_tokenizer(chat_folder: Path):
    return AutoTokenizer.from_pretrained(chat_folder)


def one_line_error(excinfo: pytest.ExceptionInfo[BenchError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- the chat model itself


def test_chat_model_loads_and_generates(chat_folder: Path, chat_tokenizer) -> None:
    model: Any = AutoModelForCausalLM.from_pretrained(chat_folder)  # generate()'s declared self type confuses mypy
    im_end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (
        chat_tokenizer.eos_token == "<|im_end|>"
        and model.generation_config.eos_token_id == im_end == model.config.eos_token_id
    )
    assert model.config.head_dim == 32 and model.config.vocab_size == len(chat_tokenizer)
    for token in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert chat_tokenizer.tokenize(f"a{token}b") == ["a", token, "b"]
    prompt = render(PromptFormat(enable_thinking=False), ITEM, chat_tokenizer)
    encoded = chat_tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**encoded, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 1 and encoded["input_ids"].shape[1] < out.shape[1] <= encoded["input_ids"].shape[1] + 6


def test_think_tags_survive_decoding_and_turn_markers_do_not(chat_tokenizer) -> None:
    """Both backends decode with skip_special_tokens=True: as in Qwen3, the think tags must stay
    (or strip_thinking could not find the thinking) while the ChatML markers go."""
    ids = chat_tokenizer.encode("<think>7</think>\n\n5<|im_end|>", add_special_tokens=False)
    decoded = chat_tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == "<think>7</think>\n\n5"
    assert strip_thinking(decoded) == "5"


def test_small_head_dim_is_accepted(tmp_path: Path) -> None:
    config = AutoModelForCausalLM.from_pretrained(build_chat_model(tmp_path / "m", head_dim=16)).config
    assert (config.head_dim, config.hidden_size) == (16, 32)


# ---------------------------------------------------------------- chat mode equals the template


def expected_messages(system: str | None, fewshot: tuple[tuple[str, str], ...], user: str) -> list[dict[str, str]]:
    turns = [] if system is None else [{"role": "system", "content": system}]
    for question, answer in fewshot:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*turns, {"role": "user", "content": user}]


@pytest.mark.parametrize("thinking", [None, True, False])
@pytest.mark.parametrize("system", [None, "Answer with the number only."])
@pytest.mark.parametrize("fewshot", [(), FEWSHOT])
def test_chat_render_equals_apply_chat_template(
    chat_tokenizer, thinking: bool | None, system: str | None, fewshot
) -> None:
    fmt = PromptFormat(system=system, fewshot=fewshot, enable_thinking=thinking)
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    expected = chat_tokenizer.apply_chat_template(
        expected_messages(system, fewshot, ITEM.prompt), tokenize=False, add_generation_prompt=True, **kwargs
    )
    text = render(fmt, ITEM, chat_tokenizer)
    assert text == expected
    assert text.startswith("<|im_start|>system\n" if system else "<|im_start|>user\n")
    assert f"<|im_start|>user\n{ITEM.prompt}<|im_end|>\n<|im_start|>assistant\n" in text
    if fewshot:
        assert "<|im_start|>user\n2+5=<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n" in text
    if thinking is False:
        assert text.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    else:
        assert text.endswith("<|im_start|>assistant\n") and "<think>" not in text


def test_question_template_fills_prompt_and_meta(chat_tokenizer) -> None:
    fmt = PromptFormat(question_template="Add {a} and {b}.\n{prompt}", enable_thinking=False)
    user = "Add 12 and 30.\n12+30="
    assert render(fmt, ITEM, chat_tokenizer) == chat_tokenizer.apply_chat_template(
        expected_messages(None, (), user), tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert render(PromptFormat(chat=False, question_template="Q: {prompt}"), ITEM, None) == "Q: 12+30="


def test_from_mapping_reads_a_yaml_section(chat_tokenizer) -> None:
    import yaml

    section = yaml.safe_load("""
prompt:
  system: Be brief.
  enable_thinking: false
  fewshot:
    - ["1+1=", "2"]
    - {user: "2+5=", assistant: "7"}
  question_template: "{prompt}"
""")["prompt"]
    fmt = PromptFormat.from_mapping(section)
    assert fmt == PromptFormat(chat=True, system="Be brief.", fewshot=FEWSHOT, enable_thinking=False)
    assert PromptFormat.from_mapping(None) == PromptFormat.from_mapping({}) == PromptFormat()
    assert render(fmt, ITEM, chat_tokenizer).endswith(EMPTY_THINK)


# ---------------------------------------------------------------- raw mode


def test_raw_mode_is_the_item_prompt_unchanged() -> None:
    """The organism's old behaviour: the model saw item.prompt and nothing else."""
    tokenizer = build_tokenizer()
    assert render(PromptFormat(chat=False), ITEM, tokenizer) == ITEM.prompt
    assert render(PromptFormat.from_mapping({"chat": False}), ITEM, tokenizer) == ITEM.prompt


def test_raw_mode_fewshot_and_system(chat_tokenizer) -> None:
    fmt = PromptFormat(chat=False, system="Sums.", fewshot=FEWSHOT)
    expected = "Sums.\n\n1+1=2\n\n2+5=7\n\n12+30="
    assert render(fmt, ITEM, build_tokenizer()) == expected
    assert render(fmt, ITEM, chat_tokenizer) == expected  # raw mode ignores a template the tokenizer has


# ---------------------------------------------------------------- strip_thinking


@pytest.mark.parametrize(
    "output, answer",
    [
        ("<think>\nlet me add: 12+30\n</think>\n\n42", "42"),  # closed
        ("<think>\n\n</think>\n\n42", "42"),  # the empty block of enable_thinking=False
        ("<think>a</think>4<think>b</think>2", "42"),  # several
        ("<think>12+30 is", ""),  # unclosed: generation ran out of tokens while thinking
        ("42 <think>but maybe", "42"),  # unclosed after the answer
        ("<think>x</think> 42 <think>y", "42"),  # closed then unclosed
        ("12+30 is 42\n</think>\n\n42", "42"),  # opened in the prompt: only the closing tag
        ("  42\n", "42"),  # no thinking: only whitespace stripped
        ("", ""),
    ],
)
def test_strip_thinking(output: str, answer: str) -> None:
    assert strip_thinking(output) == answer


def test_thinking_text_is_never_passed_on() -> None:
    assert strip_thinking("<think>the answer is 7</think>\n\n5") == "5"
    for output in (
        "<think>the answer is 7</think>5",
        "<think>the answer is 7",
        "the answer is 7</think>5",
        "<think><think>the answer is 7</think></think>5",
    ):
        assert "7" not in strip_thinking(output), output


# ---------------------------------------------------------------- bad input: one-line BenchErrors


def test_chat_mode_without_a_template_says_use_raw_mode() -> None:
    with pytest.raises(BenchError) as excinfo:
        render(PromptFormat(), ITEM, build_tokenizer())
    one_line_error(excinfo, "no chat template", "prompt: {chat: false}")


@pytest.mark.parametrize(
    "section, fragments",
    [
        ({"chat": True, "sytem": "x"}, ("unknown key 'sytem'", "system")),
        ({"chat": "yes"}, ("chat must be a bool", "str")),
        ({"system": 3}, ("system must be a str",)),
        ({"enable_thinking": "false"}, ("enable_thinking must be a bool",)),
        ({"question_template": ["{prompt}"]}, ("question_template must be a str",)),
        ({"fewshot": "1+1=2"}, ("fewshot must be a list",)),
        ({"fewshot": [["1+1=", "2", "extra"]]}, ("fewshot example 0", "pair")),
        ({"fewshot": [["1+1=", 2]]}, ("fewshot example 0",)),
        ({"fewshot": [{"user": "1+1="}]}, ("fewshot example 0", "user and assistant")),
        ({"chat": False, "enable_thinking": False}, ("enable_thinking needs chat mode",)),
        ({"question_template": "{prompt"}, ("not a valid format string",)),
        ({"question_template": "{} {prompt}"}, ("positional field",)),
        (["chat"], ("expected a mapping",)),
    ],
)
def test_from_mapping_rejects_bad_input(section, fragments) -> None:
    with pytest.raises(BenchError) as excinfo:
        PromptFormat.from_mapping(section)
    one_line_error(excinfo, *fragments)


def test_question_template_naming_a_missing_field() -> None:
    with pytest.raises(BenchError) as excinfo:
        render(PromptFormat(chat=False, question_template="{prompt} in {base}"), ITEM, None)
    one_line_error(excinfo, "{base}", ITEM.id, "a, b")
