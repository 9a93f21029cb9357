#!/bin/sh
# The static checks CI runs before the tests (the README's second quick-start command): lint,
# types, and the layering contract. Run inside an activated environment where
# scripts/install-vllm-cpu.sh has installed the project with its test extra.
set -eu
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
mypy
lint-imports --no-cache
