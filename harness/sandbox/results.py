"""The sandbox's value types: limits in, outcomes out."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "ExecutionResult", "Outcome", "SandboxError", "SandboxLimits"]


class Outcome(str, enum.Enum):
    """How one attempt ended."""

    PASS = "pass"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    TIMEOUT = "timeout"
    RESOURCE_LIMIT = "resource_limit"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): results would be meaningless."""


_POSITIVE_LIMITS = (
    "cpu_seconds",
    "wall_seconds",
    "memory_mb",
    "max_processes",
    "file_size_mb",
    "scratch_mb",
    "max_output_bytes",
)


@dataclass(frozen=True)
class SandboxLimits:
    """Per-attempt limits. CPU seconds are rounded up to whole seconds (an rlimit granularity)."""

    cpu_seconds: float = 2.0
    wall_seconds: float = 5.0
    memory_mb: int = 512
    max_processes: int = 32  # processes + threads; enforceable only with a uid drop or user namespace
    file_size_mb: int = 16
    scratch_mb: int = 64  # tmpfs size of the scratch directory, where mount namespaces are available
    max_output_bytes: int = 1 << 20  # stdout+stderr; more than this kills the attempt
    site_packages: bool = True  # let programs import the harness's installed packages (e.g. numpy)

    def __post_init__(self) -> None:
        for name in _POSITIVE_LIMITS:
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one attempt; ``detail`` is short (exception type and message, truncated)."""

    outcome: Outcome
    detail: str
    wall_seconds: float
    output: str = ""  # the head of what the program printed (stdout and stderr interleaved)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def ran_without_error(self) -> bool:
        """The program itself ran to completion: PASS or WRONG_ANSWER."""
        return self.outcome in (Outcome.PASS, Outcome.WRONG_ANSWER)
