#!/usr/bin/env bash
# One prepared command for a GPU machine: the anchor benchmark and ae_nb's own, on the same GPU in one call,
# then the summary with ratios. Everything it writes goes to $OUT (default bench/out). About 5 minutes on an
# H200: the anchor's five variants (its `optimized` one compiled), then ae_nb's TrainerAE with the default
# speed settings (timed and chosen, compile included), with compile off, and a plain loop on the same model;
# then TrainerAE again at batch 1024 (model FLOP/s against the bf16 peak).
#
#   bench/gpu_bench.sh PATH/TO/anchor_bench.py [cuda|cpu]
#
# A machine without ae_nb's pure-Python dependencies gets them from wheels in .whl/ (ignored by git), made
# beforehand on a machine with an index:
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic pydantic-core annotated-types typing-inspection fastcore
set -euo pipefail
anchor=$(realpath "${1:?usage: bench/gpu_bench.sh PATH/TO/anchor_bench.py [cuda|cpu]}")
device=${2:-cuda}
out=${OUT:-bench/out}
mkdir -p "$out"; out=$(realpath "$out")
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ae_nb_site .whl/*.whl
  export PYTHONPATH=/tmp/ae_nb_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # ae_nb from this checkout, no install needed
python3 -c "import torch, ae_nb.trainer; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true; } | tee "$out/gpu.txt"
jsonl=$out/bench.jsonl
rm -f "$jsonl"
if [ "$device" = cuda ]; then
  python3 "$anchor" --device cuda --compile --json-out "$jsonl" 2>&1 | tee "$out/anchor.log"
  python3 bench/train_bench.py --device cuda --wandb disabled --variant ae_nb_trainer,ae_nb_trainer_eager,ae_nb_model_plain \
    --json-out "$jsonl" 2>&1 | tee "$out/ae_nb.log"
  # the same at batch 1024: how much of the GPU's bf16 peak larger steps reach (model TFLOP/s in the record)
  python3 bench/train_bench.py --device cuda --wandb disabled --variant ae_nb_trainer --batch-size 1024 --n 32768 \
    --json-out "$out/big_batch.jsonl" 2>&1 | tee "$out/ae_nb_big.log"
else   # a dry run of this script on a CPU machine: small and quick
  python3 "$anchor" --device cpu --variant raw_tensor --steps 6 --warmup 2 --json-out "$jsonl" 2>&1 | tee "$out/anchor.log"
  python3 bench/train_bench.py --device cpu --wandb disabled --variant ae_nb_trainer,ae_nb_trainer_eager,ae_nb_model_plain \
    --steps 6 --warmup 2 --json-out "$jsonl" 2>&1 | tee "$out/ae_nb.log"
fi
python3 bench/train_bench.py --summary --compare "$jsonl" | tee "$out/summary.txt"
