"""Prompting as the model expects it: the exact text a model sees for an item, and its answer
with the thinking taken out.

A `PromptFormat` (a suite YAML's ``prompt:`` section, read by `PromptFormat.from_mapping`) says
how an item becomes a prompt:

- **chat mode** (``chat: true``, the default): the conversation is an optional system turn, the
  few-shot (user, assistant) turns, then the question as the last user turn; the tokenizer's own
  chat template renders it with the generation prompt appended (``add_generation_prompt=True``),
  so the text ends where the assistant's answer begins. ``enable_thinking`` (Qwen3's switch) is
  passed to the template only when it is set; a template that does not know it ignores it.
  A tokenizer without a chat template is an error: use raw mode.
- **raw mode** (``chat: false``, what the embedded organism was trained on): plain text, no
  template. The system text, when set, comes first followed by a blank line; each few-shot
  example is ``user + assistant + "\\n\\n"`` (user text and reference completion concatenated
  with nothing between them, exactly as the organism saw prompt and target in training, then a
  blank line); then the question. With no system, few-shot or template the prompt is
  ``item.prompt`` unchanged.

The question is ``question_template`` formatted with ``{prompt}`` (the item's prompt) and the
item's ``meta`` keys (``str.format`` syntax, so a literal brace is written ``{{`` / ``}}``).
Few-shot turns are used as written, not passed through the template.

An item of the few-shot recovery probe (tasks/suites/few_shot.py) carries its own solved examples
in ``meta["few_shot_examples"]`` (``ITEM_EXAMPLES``): they follow the format's ``fewshot`` turns, as prior
(user, assistant) turns in chat mode and as ``user + solution + "\\n\\n"`` in raw mode.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item

ITEM_EXAMPLES = "few_shot_examples"  # item.meta key of a probe item's own solved examples, [[user, solution], ...]


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes the text the model sees (see the module docstring)."""

    chat: bool = True  # the tokenizer's chat template; False: raw text, as the embedded organism uses
    system: str | None = None  # a system turn (raw mode: a first paragraph)
    fewshot: tuple[tuple[str, str], ...] = ()  # (user, assistant) example turns before the question
    enable_thinking: bool | None = None  # Qwen3's switch; passed to the chat template only when set
    question_template: str = "{prompt}"  # the user turn: {prompt} plus any item.meta key

    def __post_init__(self) -> None:
        _expect("chat", self.chat, bool)
        if self.system is not None:
            _expect("system", self.system, str)
        if self.enable_thinking is not None:
            _expect("enable_thinking", self.enable_thinking, bool)
        _expect("question_template", self.question_template, str)
        if not isinstance(self.fewshot, tuple) or not all(
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(turn, str) for turn in pair)
            for pair in self.fewshot
        ):
            raise BenchError("prompt: fewshot must be a list of [user, assistant] pairs of strings")
        if self.enable_thinking is not None and not self.chat:
            raise BenchError(
                "prompt: enable_thinking needs chat mode (raw text has no chat template to pass it to); "
                "drop it or set chat: true"
            )
        _check_template(self.question_template)

    @classmethod
    def from_mapping(cls, d: Any) -> PromptFormat:
        """A suite YAML's ``prompt:`` section: a mapping of this class's fields (all optional).

        ``fewshot`` is a list of pairs, each ``[user, assistant]`` or ``{user: ..., assistant: ...}``.
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise BenchError(f"prompt: expected a mapping of {', '.join(_FIELDS)}, got {type(d).__name__}")
        unknown = sorted(str(key) for key in d if key not in _FIELDS)
        if unknown:
            raise BenchError(f"prompt: unknown key {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        values = dict(d)
        if "fewshot" in values:
            values["fewshot"] = _fewshot_pairs(values["fewshot"])
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(PromptFormat))


def _expect(key: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise BenchError(f"prompt: {key} must be a {kind.__name__}, got {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fewshot_pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise BenchError(f"prompt: fewshot must be a list of [user, assistant] pairs, got {type(raw).__name__}")
    pairs = []
    for n, pair in enumerate(raw):
        if isinstance(pair, Mapping):
            if set(pair) != {"user", "assistant"}:
                raise BenchError(
                    f"prompt: fewshot example {n} must have exactly the keys user and assistant, "
                    f"got {sorted(map(str, pair))}"
                )
            pair = (pair["user"], pair["assistant"])
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(isinstance(turn, str) for turn in pair):
            raise BenchError(
                f"prompt: fewshot example {n} must be a [user, assistant] pair of strings, got {_short(pair)}"
            )
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _check_template(template: str) -> None:
    """Only named fields (``{prompt}``, ``{some_meta_key}``), so a typo fails when the suite loads."""
    try:
        names = [name for _text, name, _spec, _conversion in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise BenchError(
            f"prompt: question_template {_short(template)} is not a valid format string ({error}); "
            "write a literal brace as {{ or }}"
        ) from None
    if any(name == "" or name[0].isdigit() for name in names):
        raise BenchError(
            f"prompt: question_template {_short(template)} has a positional field; name it, e.g. {{prompt}}"
        )


def question(fmt: PromptFormat, item: Item) -> str:
    """The user turn for the item: `fmt.question_template` filled from the item."""
    if fmt.question_template == "{prompt}":
        return item.prompt
    try:
        return fmt.question_template.format_map({**item.meta, "prompt": item.prompt})
    except KeyError as error:
        known = ", ".join(["prompt", *sorted(map(str, item.meta))])
        raise BenchError(
            f"prompt: question_template field {{{error.args[0]}}} is not in item {item.id} (fields: {known})"
        ) from None
    except (IndexError, AttributeError, ValueError) as error:
        raise BenchError(
            f"prompt: question_template {_short(fmt.question_template)} cannot be filled from item {item.id}: {error}"
        ) from None


def shots_of(fmt: PromptFormat, item: Item) -> tuple[tuple[str, str], ...]:
    """The (user, assistant) examples before the question: the format's own, then the item's (a probe item's)."""
    own = item.meta.get(ITEM_EXAMPLES) if isinstance(item.meta, dict) else None
    return fmt.fewshot + tuple((str(user), str(answer)) for user, answer in own or ())


def messages(fmt: PromptFormat, item: Item) -> list[dict[str, str]]:
    """The chat-mode conversation: system turn (if set), few-shot turns, the question."""
    turns = [{"role": "system", "content": fmt.system}] if fmt.system is not None else []
    for user, assistant in shots_of(fmt, item):
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*turns, {"role": "user", "content": question(fmt, item)}]


def render(fmt: PromptFormat, item: Item, tokenizer: Any) -> str:
    """The exact text the model sees for `item` (generation continues right after it)."""
    if not fmt.chat:
        head = "" if fmt.system is None else fmt.system + "\n\n"
        shots = "".join(user + assistant + "\n\n" for user, assistant in shots_of(fmt, item))
        return head + shots + question(fmt, item)
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise BenchError(
            f"the tokenizer of {name} has no chat template: "
            "set `prompt: {chat: false}` in the suite to prompt it with raw text"
        )
    thinking = {} if fmt.enable_thinking is None else {"enable_thinking": fmt.enable_thinking}
    text = tokenizer.apply_chat_template(messages(fmt, item), tokenize=False, add_generation_prompt=True, **thinking)
    if not isinstance(text, str):  # tokenize=False returns the string; anything else is a tokenizer we do not know
        raise BenchError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'this model')} did not render to text "
            f"(got {type(text).__name__})"
        )
    return text


_CLOSED_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_thinking(text: str) -> str:
    """The answer part of a Qwen3-style output, so a scorer never sees thinking text.

    Removes every closed ``<think>...</think>`` block; an unclosed ``<think>`` (generation ran out
    of tokens while thinking) and everything after it; and everything up to a ``</think>`` with no
    opening tag (templates that open the think block in the generation prompt, as Qwen3's
    thinking-only models do, leave only the closing tag in the output). Then strips surrounding
    whitespace. Text without think tags is only stripped of surrounding whitespace.

    The tags must survive decoding: Qwen3's ``<think>`` / ``</think>`` are added tokens that are
    not "special", so ``skip_special_tokens=True`` keeps them.
    """
    text = _CLOSED_THINK.sub("", text)
    text = text.partition("<think>")[0]
    text = text.rpartition("</think>")[2]
    return text.strip()
