#!/usr/bin/env bash
# What lwz can verify on one GPU with only torch and megatron-core (no vLLM, no transformer-engine):
# the actor's parity with transformers (fp32, bf16), the weight gather that feeds the engines, tempered
# logprobs and their gradient, the GRPO update's speed and MFU against HF + AdamW, and bench/gpu_check.py
# (attention at 15k tokens, the actor's memory against the plan, the loop's phase order with an engine
# stand-in, resume). Under 8 minutes on one GPU; prints one table last (also written to
# $OUT/gpu_check.md when $OUT is set). `python bench/gpu_check.py --device cpu` is its CPU twin (CI).
#
#   bash bench/gpu_check.sh --download   # here: fetch the wheels the GPU machine lacks into .whl/
#   bash bench/gpu_check.sh              # on the GPU machine (installs .whl/ into /tmp/site first)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=("megatron-core==0.16.1" "omegaconf==2.4.0" "antlr4-python3-runtime==4.9.3")

if [[ "${1:-}" == "--download" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || python3 -m pip download --no-deps -d .whl "${WHEELS[@]}"
    exit
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" || exit 1
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
log="${OUT:-/tmp}/gpu_check.log"
: >"$log"
rows=()
check() {  # name, command...: run it, keep its output, add a table row from its last line
    local name="$1"; shift
    echo "== $name: $*" | tee -a "$log"
    local started=$SECONDS out
    out="$("$@" 2>&1)"; local code=$?
    echo "$out" >>"$log"
    local figure
    figure="$(echo "$out" | grep -E "$FIGURE" | tail -n 3 | tr '\n' ' ' | cut -c1-160)"
    rows+=("| $name | $([[ $code == 0 ]] && echo pass || echo "FAIL ($code)") | ${figure:-see log} | $((SECONDS - started)) s |")
}

card="$(python3 -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")')"
FIGURE='passed|failed|max \|diff'
check "actor parity, weight gather, tempered logprobs (fp32/bf16, NCCL)" \
    python3 -m pytest -q -p no:cacheprovider tests/multiproc/test_actor_parity.py -k gpu -rA -s
FIGURE='tokens/s|ratio|MFU'
check "GRPO update, tiny, bf16 (megatron vs HF + AdamW)" \
    python3 bench/actor.py --device cuda --model tiny --dtype bf16 --sequences 16 --prompt-len 256 --response-len 768
check "GRPO update, Qwen2.5-0.5B shape, bf16 (MFU)" \
    python3 bench/actor.py --device cuda --model 0.5b --dtype bf16 --sequences 16 --prompt-len 256 --response-len 768

echo "== bench/gpu_check.py" | tee -a "$log"
out="$(python3 bench/gpu_check.py --device cuda 2>&1)"; echo "$out" >>"$log"
mapfile -t phase_rows < <(echo "$out" | grep -E '^\| .* \| (pass|FAIL) \|' | awk '!seen[$0]++')
[[ ${#phase_rows[@]} -gt 0 ]] || phase_rows=("| bench/gpu_check.py | FAIL | no table (see log) | - |")
rows+=("${phase_rows[@]}")

table="$(printf '%s\n' "GPU check on $card ($(date -u +%F))" "" "| check | result | figures | time |" "|---|---|---|---|" "${rows[@]}")"
echo
echo "$table"
[[ -n "${OUT:-}" ]] && echo "$table" >"$OUT/gpu_check.md"
! grep -q "| FAIL" <<<"$table"
