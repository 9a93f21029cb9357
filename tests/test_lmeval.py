"""lm-eval over the harness's backends, offline, with the transformers backend (no vLLM needed;
tests/test_vllm_backend.py runs the same adapter on a vLLM engine). lm-eval is part of the `cpu`
and `gpu` extras: without it these tests fail, they are not skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from plasticity_bench.harness.backends.base import SamplingParams
from plasticity_bench.harness.backends.hf import HFBackend
from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.tasks.base import get_task

LMEVAL_MISSING = "lm-eval is not installed: pip install -e '.[cpu]' (it is in the cpu and gpu extras)"


def require_lmeval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        pytest.fail(LMEVAL_MISSING, pytrace=False)


@pytest.fixture(scope="module")
def hf_backend(smoke_run: Path) -> HFBackend:
    require_lmeval()
    backend = HFBackend(device="cpu")
    backend.load(smoke_run / "checkpoints" / "step-000004")
    return backend


def test_local_yaml_tasks_score_the_backends_own_completions(
    hf_backend: HFBackend, smoke_run: Path, monkeypatch, tmp_path: Path
) -> None:
    from plasticity_bench.harness.evaluation.lmeval_adapter import evaluate_documents
    from plasticity_bench.tasks.sources.lmeval import task_config

    monkeypatch.chdir(tmp_path)  # data files resolve against the YAML's folder, not the working directory
    model = smoke_run / "checkpoints" / "step-000004"
    samples = sorted(
        evaluate_documents(hf_backend, model, task_config("organism_arith"), 12), key=lambda s: s["doc_id"]
    )
    assert len(samples) == 12
    direct = hf_backend.generate([s["doc"]["prompt"] for s in samples], SamplingParams(max_new_tokens=48, stop=("\n",)))
    assert [s["resps"][0][0] for s in samples] == [d[0] for d in direct]
    # exact_match agrees with the harness's own chain_sum scorer on the same completions
    items = [_item(s["doc"]) for s in samples]
    harness_scores = [score.correct for score in get_task("chain_sum").score(items, [d[0] for d in direct])]
    assert [bool(s["exact_match"]) for s in samples] == harness_scores


def _item(doc: dict):
    from plasticity_bench.tasks.base import Item

    return Item(doc["id"], "math", "chain_sum", "easy", doc["prompt"], doc["target"], doc["answer"], {})


def test_loglikelihoods_follow_the_chain_rule(hf_backend: HFBackend) -> None:
    context = "calc 4+7-9\n"
    (whole, _), (first, _), (second, _) = hf_backend.loglikelihoods(
        [(context, "4+7"), (context, "4+"), (context + "4+", "7")]
    )
    assert whole == pytest.approx(first + second, abs=1e-4)
    ((empty_context, _),) = hf_backend.loglikelihoods([("", "calc")])
    assert empty_context < 0


def test_generation_settings_map_to_sampling_params(hf_backend: HFBackend, smoke_run: Path) -> None:
    from plasticity_bench.harness.evaluation.lmeval_adapter import BackendLM

    lm = BackendLM(hf_backend, smoke_run / "checkpoints" / "step-000004", seed=3)
    assert lm._sampling_params("calc 1+2\n", {"until": "\n", "max_gen_toks": 20}) == SamplingParams(
        20, 0.0, 1.0, 1, 3, ("\n",)
    )
    sampled = lm._sampling_params("abc", {"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert (sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (0.7, 0.9, 125)  # 256 asked, 128 - 3 left
    with pytest.raises(BenchError, match="top_k"):
        lm._sampling_params("abc", {"top_k": 5})
    with pytest.raises(BenchError, match="context of 128"):
        lm._sampling_params("x" * 130, {})


def test_task_config_resolves_local_data_files_and_passes_other_names_through() -> None:
    require_lmeval()
    from plasticity_bench.tasks.sources.lmeval import LOCAL_TASKS, task_config

    config = task_config("organism_arith")
    data = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data == LOCAL_TASKS / "organism_arith.jsonl"
    assert len(data.read_text().splitlines()) == 40
    assert all(
        set(json.loads(line)) >= {"prompt", "answer", "choices", "label"} for line in data.read_text().splitlines()
    )
    assert task_config("hellaswag") == "hellaswag"


def test_backends_without_loglikelihoods_say_so() -> None:
    """The adapter asks the backend's declared capabilities, not its name: a backend that declares
    no log-likelihoods is refused with a one-line error naming those that can."""
    from plasticity_bench.harness.backends import GenerationBackend
    from plasticity_bench.harness.evaluation.lmeval_adapter import backend_loglikelihoods

    class GenerateOnly(GenerationBackend):
        name = "generate-only"

        def load(self, model_dir: Path) -> None: ...

        def generate(self, prompts, params):  # type: ignore[no-untyped-def]
            return [[""] for _ in prompts]

    with pytest.raises(
        BenchError, match="backend 'generate-only' cannot score log-likelihoods.*use one that can \\(hf"
    ):
        backend_loglikelihoods(GenerateOnly(), [("a", "b")])
    with pytest.raises(BenchError, match="the hf backend has no model loaded"):
        HFBackend(device="cpu").loglikelihoods([("a", "b")])
