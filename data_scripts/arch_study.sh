#!/usr/bin/env bash
# make arch-study: four byte-level language models of about the same size trained on the KJV
# text with the same recipe and the same tokens, one table:
#   Mamba-1 (M1 x 8), Mamba-2 (M2 x 8), a transformer ((A,F) x 4, learned positions) and a
#   hybrid of Mamba-2, attention and MLP layers (M2,M2,A,F,M2,M2,A,F).
# For each: parameters, validation loss (the curve and the last value), tokens/s, peak memory.
# Outputs under $OUT (default out/arch_study): results.csv, results.md, arch_study.png, logs.
#
# GPU: 512 wide (the make kjv GPU configuration), 2000 steps of 16 x 512 tokens. Without a GPU
# (or SIZE=tiny) the same study runs at a tiny size on the CPU: smoke coverage, not figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/arch_study}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo "
if [ ! -s data/kjv/train.bin ] || [ ! -s data/kjv/val.bin ]; then
    command -v bible >/dev/null || { echo "error: the \`bible\` program is missing: ${SUDO}apt-get install -y bible-kjv" >&2; exit 1; }
    python3 data_scripts/prepare_kjv.py data/kjv
fi
BIN=${TRAIN_BIN:-./train_mamba}
[ -n "${TRAIN_BIN:-}" ] || make train_mamba >/dev/null
gpu=0
if [ "${SIZE:-}" != tiny ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ldd "$BIN" | grep -q cublas; then gpu=1; fi
if [ $gpu = 1 ]; then
    D=512; RUN="--batch 16 --seq-len 512 --lr 1.5e-3 --warmup 200 --steps ${STEPS:-2000} --eval-interval 250 --eval-batches 16"
    M2="--m2-d-state 128 --m2-headdim 64"
    CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
else
    D=64; RUN="--device cpu --batch 4 --seq-len 64 --lr 3e-3 --warmup 5 --steps ${STEPS:-30} --eval-interval 15 --eval-batches 2"
    M2="--m2-d-state 16 --m2-headdim 32 --m2-chunk 32"
    CARD="CPU (tiny size)"
fi
mkdir -p "$OUT"
run() {  # name, flags...
    local name=$1; shift
    echo "== $name: $*"
    "$BIN" --data-dir data/kjv --d-model $D $RUN "$@" --log-every 250 --log "$OUT/$name.jsonl" > "$OUT/$name.log" 2>&1 \
        || { echo "error: $name failed, see $OUT/$name.log" >&2; tail -3 "$OUT/$name.log" >&2; exit 1; }
    grep -E "^model:|summary:" "$OUT/$name.log"
}
rm -f "$OUT"/*.jsonl
run mamba1 --layers "M1*8"
run mamba2 --layers "M2*8" $M2
run transformer --layers "A,F,A,F,A,F,A,F"
run hybrid --layers "M2,M2,A,F,M2,M2,A,F" $M2
PY=/usr/bin/python3; $PY -c "import matplotlib" 2>/dev/null || PY=python3  # (a machine whose system python lacks numpy)
$PY data_scripts/arch_study.py "$OUT" "$CARD"
