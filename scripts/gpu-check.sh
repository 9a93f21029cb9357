#!/usr/bin/env bash
# Exercise the CUDA paths of plasticity-bench on one GPU and write a JSON of results (docs/gpu-check.md).
#
#   scripts/gpu-check.sh [OUT.json] [--cpu]
#
# OUT.json (default gpu-check.json): per check ok/failed, seconds, the error line when it failed, peak memory
# and the memory estimate where relevant, and the device's name with the torch/CUDA versions.
# Checks, each in its own process under its own time limit, so that one failing does not stop the others:
#   environment        versions, the device, bf16 support
#   organism_sft       `bench run --method sft` on the shipped organism, on the GPU (bf16 autocast), hf backends
#   organism_grpo      the same for GRPO (rollouts sampled by the hf backend on the GPU)
#   qwen3_full         a randomly initialised Qwen3-0.6B-shaped model (bf16): 2 SFT steps, full fine-tuning,
#                      peak memory against `bench run --dry-run`'s estimate
#   qwen3_lora         the same with LoRA adapters
#   accelerate_launch  `accelerate launch --num_processes 1` of an SFT run
# The limits add up to under 8 minutes. Needs PyTorch, transformers, accelerate and peft; no vLLM, no network.
# --cpu (or no CUDA GPU visible): the same checks on the CPU at the smallest sizes (what tests/test_gpu_check.py runs).
# Exit status: 0 when every check passed, 1 otherwise, 2 on a usage error.
set -u

here=$(cd "$(dirname "$0")" && pwd)
helper="$here/gpu_check.py"
python=${PYTHON:-python}
out=gpu-check.json
mode=auto
for arg in "$@"; do
    case "$arg" in
        --cpu) mode=cpu ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "error: unknown option $arg (usage: scripts/gpu-check.sh [OUT.json] [--cpu])" >&2; exit 2 ;;
        *) out=$arg ;;
    esac
done

# the hub is unreachable on a lent GPU machine: nothing may try it
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
# plasticity_bench imports from the checkout when it is not installed (plasticity_bench/ links to the folders)
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"

if [ "$mode" = auto ]; then
    if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        mode=cuda
    else
        mode=cpu
        echo "no CUDA GPU visible to torch: running the checks on the CPU at the smallest sizes" >&2
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

# run_check NAME LIMIT_S COMMAND...: COMMAND's output to NAME.log, "exit-status seconds limit" to NAME.status
run_check() {
    local name=$1 limit=$2
    shift 2
    local start end rc
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "$rc $seconds $limit" >"$work/$name.status"
    if [ "$rc" -eq 0 ]; then
        echo "$name: ok (${seconds} s)" >&2
    else
        echo "$name: FAILED (exit $rc, ${seconds} s); its log's last lines:" >&2
        tail -n 5 "$work/$name.log" | sed 's/^/    /' >&2
    fi
}

check() { run_check "$1" "$2" "$python" "$helper" "$1" --mode "$mode" --work "$work"; }

accelerate_flags=(--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)
if [ "$mode" = cpu ]; then
    accelerate_flags+=(--cpu)
fi

# limits: 460 s together
check environment 30
check organism_sft 70
check organism_grpo 90
check qwen3_full 120
check qwen3_lora 90
run_check accelerate_launch 60 "$python" -m accelerate.commands.accelerate_cli launch "${accelerate_flags[@]}" \
    "$helper" accelerate_launch --mode "$mode" --work "$work"

"$python" "$helper" merge --mode "$mode" --work "$work" --out "$out"
status=$?
echo "results: $out ($mode; $([ "$status" -eq 0 ] && echo 'every check passed' || echo 'some checks FAILED'))" >&2
exit "$status"
