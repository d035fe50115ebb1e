#!/usr/bin/env bash
# The main training job: prepares the KJV shards if needed, builds train_mamba,
# and trains a byte-level Mamba on the GPU when there is one, on the CPU
# otherwise; then plots the loss curve. Extra arguments go to train_mamba.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo "  # a bare Debian image is root without sudo
shards_ok() { [ -s data/kjv/train.bin ] && [ -s data/kjv/val.bin ]; }
if ! shards_ok; then
    if ! command -v bible >/dev/null; then
        echo "error: the \`bible\` program (package bible-kjv) is missing: ${SUDO}apt-get install -y bible-kjv" >&2
        exit 1
    fi
    python3 data_scripts/prepare_kjv.py data/kjv
fi
# an interrupted or failed preparation must not reach the trainer as a missing shard
if ! shards_ok; then
    echo "error: data/kjv/train.bin and data/kjv/val.bin must both exist and be non-empty after" \
         "data_scripts/prepare_kjv.py; delete data/kjv and run again" >&2
    exit 1
fi
make train_mamba
mkdir -p out
# the GPU settings only when a GPU answers AND train_mamba was built with CUDA
# (`make kjv NVCC=` builds CPU-only, e.g. for a GPU older than sm_80)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ldd ./train_mamba 2>/dev/null | grep cublas >/dev/null; then
    # GPU: a 512-wide, 8-layer model; the 4.3 MB text is memorised beyond ~2000 steps
    # of 8192 tokens, so stop there (about half a minute on an H100; 10 minutes at most)
    ./train_mamba --d-model 512 --n-layer 8 --batch 16 --seq-len 512 --lr 1.5e-3 --warmup 200 --steps 2000 \
        --max-minutes 10 --eval-interval 250 --sample-interval 1000 --log out/kjv.jsonl --checkpoint out/kjv.ckpt "$@"
else
    # CPU: a small model that gets well under 2.5 nats/byte in a few minutes on 2 cores
    ./train_mamba --device cpu --d-model 128 --n-layer 3 --batch 8 --seq-len 128 --lr 3e-3 --warmup 50 --steps 1200 \
        --eval-interval 100 --eval-batches 8 --sample-interval 600 --log out/kjv.jsonl --checkpoint out/kjv.ckpt "$@"
fi
/usr/bin/python3 data_scripts/plot_log.py out/kjv.jsonl -o out/kjv_loss.png || echo "(plot skipped)"
