#!/usr/bin/env bash
# make lora-study: pretrain a byte-level Mamba on the KJV text, fine-tune it on
# the fortunes (data_scripts/prepare_fortunes.py) nine ways, and tabulate what
# each costs and how much of the Bible it forgets:
#   full fine-tuning; LoRA on in_proj, on in_proj's x half (LoRAp(X)), on
#   out_proj only, on every linear layer; each LoRA at ranks 4 and 16.
# For each: trainable parameters, optimizer-state bytes, peak GPU memory
# (measured), ms/step, fortunes validation loss, KJV validation loss afterwards.
# Outputs under $OUT (default out/lora_study): results.csv, results.md,
# lora_study.png, the logs, base.ckpt and the adapter files.
#
# GPU: a 512-wide 8-layer model (the make kjv GPU configuration). Without a GPU
# (or SIZE=tiny) the same study runs at a tiny size on the CPU in a few
# minutes: smoke coverage, not figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/lora_study}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo "
if [ ! -s data/kjv/train.bin ] || [ ! -s data/kjv/val.bin ]; then
    command -v bible >/dev/null || { echo "error: the \`bible\` program is missing: ${SUDO}apt-get install -y bible-kjv" >&2; exit 1; }
    python3 data_scripts/prepare_kjv.py data/kjv
fi
if [ ! -s data/fortunes/train.bin ] || [ ! -s data/fortunes/val.bin ]; then
    [ -d /usr/share/games/fortunes ] || { echo "error: the fortunes are missing: ${SUDO}apt-get install -y fortunes" >&2; exit 1; }
    python3 data_scripts/prepare_fortunes.py data/fortunes
fi
make train_mamba
gpu=0
if [ "${SIZE:-}" != tiny ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ldd ./train_mamba | grep -q cublas; then gpu=1; fi
if [ $gpu = 1 ]; then
    MODEL="--d-model 512 --n-layer 8"
    DATA="--batch 16 --seq-len 512"
    PRE="--lr 1.5e-3 --warmup 200 --steps 2000 --eval-interval 500"
    FT_STEPS="--steps 600 --warmup 50 --eval-interval 100 --eval-batches 16"
else
    MODEL="--d-model 64 --n-layer 2 --device cpu"
    DATA="--batch 8 --seq-len 128"
    PRE="--lr 3e-3 --warmup 20 --steps 200 --eval-interval 100 --eval-batches 4"
    FT_STEPS="--steps 40 --warmup 4 --eval-interval 20 --eval-batches 4 --device cpu"
fi
mkdir -p "$OUT"
echo "== pretraining on the KJV text ($([ $gpu = 1 ] && echo GPU || echo CPU, tiny))"
./train_mamba $MODEL $DATA $PRE --data-dir data/kjv --log "$OUT/base.jsonl" --checkpoint "$OUT/base.ckpt" --log-every 100 | tail -4

FT="--base $OUT/base.ckpt --data-dir data/fortunes --also-eval data/kjv $DATA $FT_STEPS --log-every 100"
run() {  # name, flags...
    local name=$1; shift
    echo "== $name"
    ./train_mamba $FT "$@" --log "$OUT/$name.jsonl" --checkpoint "$OUT/$name.ckpt" | grep -E "fine-tuning|summary|val loss" | tail -3
}
run full --lr 5e-4
for r in 4 16; do
    LORA="--lora-rank $r --lora-alpha $((2 * r)) --lr 3e-3"
    run "in_proj_r$r" $LORA --lora-targets in_proj
    run "in_proj_x_r$r" $LORA --lora-targets in_proj_x
    run "out_proj_r$r" $LORA --lora-targets out_proj
    run "all_r$r" $LORA --lora-targets all
done
/usr/bin/python3 data_scripts/lora_study.py "$OUT" "$([ $gpu = 1 ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo "CPU (tiny size)")"
