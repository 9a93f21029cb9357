"""transformers backend: batched generation with left padding, on CPU or one GPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from plasticity_bench.harness.backends.base import (
    BACKENDS,
    Capabilities,
    GenerationBackend,
    SamplingParams,
    encode_context_continuation,
    truncate_at_stop,
)
from plasticity_bench.harness.core.errors import BenchError


@BACKENDS.register("hf", "transformers generate(), batched, left-padded")
class HFBackend(GenerationBackend):
    capabilities = Capabilities(loglikelihoods=True, policy_in_memory=True)

    def __init__(self, batch_size: int = 128, device: str | None = None) -> None:
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model: Any = None  # a PreTrainedModel once loaded (Any: transformers' stubs lack generate's type)
        self.tokenizer: PreTrainedTokenizerBase | None = None

    @classmethod
    def from_model(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 128) -> HFBackend:
        """Generate with a model already in memory (e.g. the policy during RL), no copy made."""
        backend = cls(batch_size, device=str(model.device))
        backend.model, backend.tokenizer = model, tokenizer
        return backend

    def load(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32
        )  # Any: transformers types .to() oddly
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        assert self.model is not None and self.tokenizer is not None, "call load() first"
        # Sort by length so each batch pads little; restore the caller's order at the end.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        completions: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(params.seed)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            sampling = (
                {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
                if params.temperature > 0
                else {"do_sample": False}
            )
            output = self.model.generate(
                **encoded,
                max_new_tokens=params.max_new_tokens,
                num_return_sequences=params.n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **sampling,
            )
            texts = self.tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            for row, text in enumerate(texts):
                completions[chunk[row // params.n]].append(truncate_at_stop(text, params.stop))
        return completions

    @torch.inference_mode()
    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """One unpadded forward pass per request."""
        if self.model is None or self.tokenizer is None:
            raise BenchError("the hf backend has no model loaded; call load(model_dir) first")
        results = []
        for context, continuation in requests:
            context_ids, continuation_ids = encode_context_continuation(self.tokenizer, context, continuation)
            ids = torch.tensor([context_ids + continuation_ids], device=self.device)
            logits = self.model(ids).logits[0, len(context_ids) - 1 : -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            target = torch.tensor(continuation_ids, device=self.device)
            picked = logprobs.gather(1, target[:, None]).squeeze(1)
            results.append((float(picked.sum()), bool((logprobs.argmax(dim=-1) == target).all())))
        return results
