"""Every failure a user can foresee is one line on stderr, exit status 2, and leaves no half-made
run folder: corrupt model folders, impossible organisms, non-finite numbers, unwritable or full
output locations. Anything else keeps its traceback (exit 1)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import transformers

from plasticity_bench.harness.app.organism import OrganismConfig, build_model, build_tokenizer
from plasticity_bench.harness.core.errors import BenchError, writing
from plasticity_bench.harness.store import save_checkpoint
from tests.helpers import cli, rejected


def left_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- model folders (--model)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, valid Hugging Face model folder (untrained: only its files matter here)."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    tokenizer = build_tokenizer()
    save_checkpoint(
        build_model(
            OrganismConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
            len(tokenizer),
        ),
        tokenizer,
        folder,
    )
    return folder


def broken_copy(model_folder: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_folder, copy)
    damage(copy)
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda m: (m / "config.json").write_text('{"model_type": "qwen3", '),
            "config.json is not valid JSON (line 1)",
        ),
        (
            lambda m: (m / "config.json").write_text("[1, 2]"),
            "config.json holds a JSON list, not a model configuration",
        ),
        (lambda m: (m / "config.json").write_text('{"hidden_size": 8}'), "names no model_type"),
        (
            lambda m: os.truncate(m / "model.safetensors", (m / "model.safetensors").stat().st_size // 2),
            "model.safetensors is corrupt or truncated",
        ),
        (lambda m: (m / "model.safetensors").unlink(), "has no weights"),
        (lambda m: [f.unlink() for f in m.glob("tokenizer*")], "has no tokenizer"),
    ],
    ids=[
        "config-truncated",
        "config-not-a-mapping",
        "config-without-model-type",
        "weights-truncated",
        "weights-missing",
        "tokenizer-missing",
    ],
)
def test_a_broken_model_folder(model_folder: Path, tmp_path: Path, damage, message: str) -> None:
    model = broken_copy(model_folder, tmp_path, damage)
    out = tmp_path / "run"
    rejected(cli("run", "--model", str(model), "--preset", "smoke", "--out", str(out)), message)
    assert not out.exists()


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("organism: {hidden_size: 0}", "organism.hidden_size must be positive, got 0"),
        ("organism: {num_heads: 5}", "organism.num_heads (5) must divide organism.hidden_size (32)"),
        ("organism: {num_kv_heads: 3}", "organism.num_kv_heads (3) must divide organism.num_heads (2)"),
        ("organism: {hidden_size: 30, num_heads: 2}", "the head size, 15) must be even"),
        ("organism: {num_layers: 0}", "organism.num_layers must be positive"),
        ("organism: {num_heads: -2}", "organism.num_heads must be positive"),
        ("organism: {num_kv_heads: 0}", "organism.num_kv_heads must be positive"),
        ("organism: {intermediate_size: -1}", "organism.intermediate_size must be positive"),
        ("organism: {max_positions: 0}", "organism.max_positions must be positive"),
        ("organism: {max_positions: 20}", "organism.max_positions (20) is too short for evaluation set"),
        ("organism: {pretrain_steps: 0}", "organism.pretrain_steps must be positive"),
        ("organism: {batch_size: 0}", "organism.batch_size must be positive"),
        ("organism: {lr: 0}", "organism.lr must be positive"),
        ("organism: {seed: -1}", "organism.seed must be >= 0"),
        ("organism: {lr: .nan}", "setting organism.lr must be a finite number, got nan"),
        ("lr: .nan", "setting lr must be a finite number, got nan"),
        ("lr: .inf", "setting lr must be a finite number, got inf"),
        ("grad_clip: -.inf", "setting grad_clip must be a finite number, got -inf"),
        ("weight_decay: .NaN", "setting weight_decay must be a finite number"),
        ("weight_decay: -0.1", "weight_decay must be >= 0"),
        ("seed: -1", "seed must be >= 0"),
        ("steps: 2.5", "setting steps must be int, got 2.5"),
        ("lr: '1e-4'", "setting lr must be float, got '1e-4'"),  # quoted: a string, as written
    ],
)
def test_a_bad_setting(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text + "\n")
    out = tmp_path / "run"
    rejected(cli("run", "--preset", "smoke", "--config", str(config), "--out", str(out)), message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("dpo", "{beta: .nan}", "setting options.beta must be a finite number, got nan"),
        ("grpo", "{clip_eps: .inf}", "setting options.clip_eps must be a finite number, got inf"),
        ("spot", "{gamma: .nan}", "setting options.gamma must be a finite number"),
    ],
)
def test_non_finite_method_options(tmp_path: Path, method: str, options: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"options: {options}\n")
    out = tmp_path / "run"
    rejected(cli("run", "--method", method, "--preset", "smoke", "--config", str(config), "--out", str(out)), message)
    assert not out.exists()


def test_the_config_files_method_counts_unless_the_command_line_names_one(tmp_path: Path) -> None:
    """`method:` in a config file picks the trainer (whose options are then checked); --method overrides it."""
    config = tmp_path / "c.yaml"
    config.write_text("method: grpo\noptions: {group_size: 1}\n")
    rejected(
        cli("run", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "a")),
        "options.group_size must be >= 2",
    )
    rejected(
        cli("run", "--method", "sft", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "b")),
        "method sft takes no options",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- unwritable or full output locations


def mount_tmpfs(folder: Path, options: str) -> bool:
    """A private tmpfs (as root); False where this machine does not allow it."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write: a read-only tmpfs as root (root ignores permission bits), else mode 555."""
    folder = tmp_path / "read-only"
    if mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        pytest.skip("root without permission to mount a read-only tmpfs: a read-only folder cannot be made here")


def test_a_read_only_output_folder(read_only_folder: Path) -> None:
    for out in (read_only_folder / "run", read_only_folder):  # a new folder inside it, or the (empty) folder itself
        rejected(cli("run", "--preset", "smoke", "--out", str(out)), f"cannot write {out}", str(read_only_folder))
    assert left_in(read_only_folder) == []


def test_an_output_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    rejected(cli("run", "--preset", "smoke", "--out", str(tmp_path / "file" / "run")), "is a file, not a folder")
    assert left_in(tmp_path) == ["file"]


def test_a_read_only_organism_cache(read_only_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASTICITY_BENCH_CACHE", str(read_only_folder))
    rejected(cli("base", "--preset", "smoke", "-q"), f"cannot write {read_only_folder}")
    assert left_in(read_only_folder) == []


@pytest.fixture
def organism_cache(bench_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process runs share the session's organism cache (built once, a few seconds for smoke)."""
    monkeypatch.setenv("PLASTICITY_BENCH_CACHE", str(bench_cache))
    return bench_cache


@pytest.mark.e2e
@pytest.mark.parametrize(
    "size", ["8k", "64k", "160k", "300k"]
)  # full at the first table, first checkpoint, a later one, the report
def test_a_full_disk(organism_cache: Path, tmp_path: Path, size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, f"size={size}"):
        pytest.skip("needs root and mount for a small tmpfs; test_a_full_disk_simulated covers the same path")
    try:
        out = disk / "run"
        # the run's disk estimate refuses such a disk up front...
        rejected(cli("run", "--preset", "smoke", "--out", str(out), "-q"), "not enough disk space for this run")
        assert left_in(disk) == []
        # ...and when the disk fills anyway (another process, a wrong estimate), the writes say so
        monkeypatch.setattr("plasticity_bench.harness.app.stages.prepare.check_disk", lambda *args: None)
        rejected(
            cli("run", "--preset", "smoke", "--out", str(out), "-q"),
            f"cannot write {out}: no space left on device",
            "free some space",
        )
        assert left_in(disk) == []  # no step-….partial/, no .tmp, no run folder
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# what safetensors raises on a full disk
RUST_ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.mark.e2e
@pytest.mark.parametrize("out_exists", [False, True])
def test_a_full_disk_simulated(
    organism_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out_exists: bool
) -> None:
    """The disk fills while the second checkpoint's weights are written (as safetensors reports it)."""
    out = tmp_path / "run"
    if out_exists:
        out.mkdir()  # an empty folder the user made: it stays, emptied
    save_pretrained = transformers.PreTrainedModel.save_pretrained

    def fill_up(self, folder, *args, **kwargs):
        if Path(folder).is_relative_to(out) and "step-000002" in str(folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "config.json").write_text("{}")
            raise Exception(RUST_ENOSPC)  # noqa: TRY002  (safetensors raises a plain Exception subclass)
        return save_pretrained(self, folder, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", fill_up)
    rejected(cli("run", "--preset", "smoke", "--out", str(out), "-q"), f"cannot write {out}: no space left on device")
    assert left_in(tmp_path) == (["run"] if out_exists else [])


@pytest.mark.e2e
def test_a_full_organism_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    if not mount_tmpfs(cache, "size=16k"):
        pytest.skip("needs root and mount for a small tmpfs")
    try:
        monkeypatch.setenv("PLASTICITY_BENCH_CACHE", str(cache))
        done = cli("base", "--preset", "smoke", "-q")
        rejected(done, f"cannot write {cache / 'organisms'}: no space left on device")
        assert left_in(cache) == ["organisms"]
    finally:
        subprocess.run(["umount", str(cache)], check=True)


@pytest.mark.slow
def test_unwritable_output_files_of_other_commands(tmp_path: Path) -> None:
    from tests.test_gate import baseline_outcomes, write_run

    run = write_run(tmp_path / "a", {0: baseline_outcomes(4), 4: baseline_outcomes(4, seed=1)}, 4)
    (tmp_path / "file").write_text("not a folder")
    before = left_in(tmp_path)
    missing = tmp_path / "no" / "such" / "v.json"
    rejected(
        cli("gate", "-b", str(run), "-c", str(run), "--json", str(missing)),
        f"cannot write {missing}: no such file or directory",
    )
    rejected(cli("compare", str(run), str(run), "--json", str(tmp_path)), f"cannot write {tmp_path}: is a directory")
    rejected(
        cli("export-baseline", str(run), "-o", str(tmp_path / "file" / "b.json")),
        "cannot write",
        "a file stands where a folder is needed",
    )
    rejected(cli("report", str(run), "-o", str(tmp_path / "file" / "r.html")), "cannot write", "file")
    assert left_in(tmp_path) == before  # no .tmp files, no half-made folders


# ---------------------------------------------------------------- only foreseeable failures become one line


def test_writing_converts_only_foreseeable_failures_of_its_target(tmp_path: Path) -> None:
    target = tmp_path / "run"
    for number in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        with pytest.raises(BenchError, match=f"cannot write {target}: {os.strerror(number).lower()}"):
            with writing(target):
                raise OSError(number, os.strerror(number), str(target / "checkpoints" / "x"))
    with pytest.raises(BenchError, match="no space left on device"), writing(target):
        raise Exception(RUST_ENOSPC)  # noqa: TRY002
    with pytest.raises(OSError) as elsewhere, writing(target):  # another file's problem is not the target's
        raise OSError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert elsewhere.value.errno == errno.EACCES
    with pytest.raises(OSError) as io_error, writing(target):  # a failing device is not bad input: traceback
        raise OSError(errno.EIO, "Input/output error", str(target / "x"))
    assert io_error.value.errno == errno.EIO
    with pytest.raises(FileNotFoundError), writing(target):  # a missing file inside the run folder is a bug, not input
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(target / "x"))
    with pytest.raises(ZeroDivisionError), writing(target):
        raise ZeroDivisionError


def test_an_unexpected_error_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("plasticity_bench.harness.app.stages.prepare.prepare", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli("run", "--preset", "smoke", "--out", str(tmp_path / "run"))
