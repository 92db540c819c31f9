#!/usr/bin/env bash
# experiments/smollm2_ultralong.yaml (issue 33) on one 2-core, 24 GB machine: the held-out evaluation of the
# base model, the two runs (sync, partial) one after the other (each needs 22.8 GB of host memory by the plan), the same
# evaluation of each run's newest checkpoint, then `lwz compare`. The runs take hours: stop the script (or the machine) at any time;
# started again, it skips the evaluation already written and resumes each run from its last checkpoint.
# Evaluation: the 40 held-out requests (300-1,500 words), one answer each, at most 4,096 tokens.
# Usage: bash experiments/smollm2_ultralong.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-runs}")"
exp="$out/smollm2_ultralong"
bench=(--bench longbench_write --data experiments/data/long_length_bench.jsonl --chat-template --template think
       --max-tokens 4096 --cpu-kv-cache-gib 6)
model="$(python -c "from lwz.models_local.smollm2 import smollm2_path; print(smollm2_path())")"   # built on first use
export OMP_NUM_THREADS=2   # 135M parameters and 4k-token sequences: both cores for one process

[[ -f "$exp/before/think/summary.json" ]] || lwz eval "$model" "${bench[@]}" --out "$exp/before/think"

# The experiment's runs (its `set:` and variants, as `lwz sweep` would start them), one at a time.
mapfile -t runs < <(python - <<'EOF'
from lwz.launch.sweep import expand, load_experiment
experiment = load_experiment("experiments/smollm2_ultralong.yaml")
for name, overrides in expand(experiment):
    print(" ".join([name, *experiment.fixed, *overrides]))
EOF
)
for line in "${runs[@]}"; do
    read -r name overrides <<<"$line"
    folder="$exp/$name"
    if [[ -f "$folder/recipe.yaml" ]]; then target=("$folder"); else
        target=(recipes/smollm2_ultralong.yaml $overrides "logging.output_dir=$out" "logging.run=$name")
    fi
    lwz run "${target[@]}" > "$exp/$name.log" 2>&1
done

for name in sync partial; do
    lwz eval "$exp/$name" "${bench[@]}"
done
lwz compare experiments/smollm2_ultralong.yaml "logging.output_dir=$out"
