#!/usr/bin/env bash
# experiments/smollm2_length.yaml end to end: LongBench-Write-style evaluation of SmolLM2-135M-Instruct
# before training (both templates), the 2 x 2 sweep as one SLURM job array, the same evaluation of
# every run's last checkpoint, then `lwz compare`. The evaluation: the benchmark's 20 items with the
# shortest targets (40-120 words; the file is sorted by target), answers of up to 192 tokens. Needs a SLURM (the test cluster will do:
# slurm/test_cluster/start.sh). Usage: bash experiments/smollm2_length.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-runs}")"
exp="$out/smollm2_length"
bench=(--bench longbench_write --data experiments/data/short_length_bench.jsonl --chat-template --max-tokens 192 --limit 20)
model="$(python -c "from lwz.models_local.smollm2 import smollm2_path; print(smollm2_path())")"   # built on first use

for template in nothink think; do
    lwz eval "$model" "${bench[@]}" --template "$template" --out "$exp/before/$template"
done
lwz sweep experiments/smollm2_length.yaml "logging.output_dir=$out"
array="$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['array_job_id'])" "$exp/sweep.json")"
while squeue -h -j "$array" 2>/dev/null | grep -q .; do sleep 30; done
for run in "$exp"/*-template=*/; do
    template="${run##*template=}"; template="${template%/}"
    lwz eval "$run" "${bench[@]}" --template "$template"
done
lwz compare experiments/smollm2_length.yaml "logging.output_dir=$out"
