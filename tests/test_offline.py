"""Without a network the CLI answers at once: the Hugging Face clients go offline instead of
retrying every hub request (harness/app/offline.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

UNRESOLVABLE = "https://hub.invalid"  # RFC 2606: .invalid never resolves


def env_without_offline_switches(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    return {**env, **extra}


def test_an_unresolvable_hub_sets_the_offline_switches_and_a_users_own_setting_wins() -> None:
    probe = (
        "import json, os; from plasticity_bench.harness.app.offline import go_offline_without_network as go; "
        "print(json.dumps([go(), os.environ.get('HF_HUB_OFFLINE'), os.environ.get('HF_DATASETS_OFFLINE')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env_without_offline_switches(HF_ENDPOINT=UNRESOLVABLE),
    )
    assert json.loads(done.stdout) == [True, "1", "1"], done.stderr
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env_without_offline_switches(HF_ENDPOINT=UNRESOLVABLE, HF_HUB_OFFLINE="0"),
    )
    assert json.loads(done.stdout) == [False, "0", None], done.stderr


def test_suite_check_with_no_network_skips_an_optional_hub_set_without_retrying(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text(
        "".join(json.dumps({"q": f"{a}+{a}=", "a": str(2 * a)}) + "\n" for a in range(4))
    )
    (tmp_path / "suite.yaml").write_text(
        "name: offline\neval:\n"
        "  - {name: qa, family: math, role: target, scorer: numeric,\n"
        "     source: {kind: file, path: qa.jsonl, fields: {prompt: q, answer: a}}}\n"
        "  - {name: gsm8k, family: math, optional: true, scorer: numeric,\n"
        "     source: {kind: hub, dataset: openai/gsm8k, config: main, fields: {prompt: question, answer: answer}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "plasticity_bench.harness.app.cli", "suites", "--check", str(tmp_path / "suite.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env_without_offline_switches(HF_ENDPOINT=UNRESOLVABLE),
    )
    assert done.returncode == 0, done.stderr
    assert "Retrying" not in done.stderr and "Retrying" not in done.stdout
    assert "gsm8k/test is optional and skipped here" in done.stdout
    assert "qa/test" in done.stdout
