#!/usr/bin/env bash
# The ViT classifier study (issue 11, item 4): a ViT classifier (the VLM's vision encoder + a linear
# head on [CLS], `train_vlm --stage classify`) trained on single Fashion-MNIST items, then evaluated
# with fewer tokens: none, tome (merging inside every block), pool (2x2 average at the encoder's
# input, R = 0.75 only) and random (a random subset at the input) at the ratios 0.25, 0.5, 0.75.
# Each run is `train_vlm --stage eval` of the classifier: test accuracy, analytic GFLOP per image and
# measured images/s (one batch through the classifier, median of PROFILE_ITERS runs). Then
# data_scripts/vit_study.py report: OUT/study.csv, OUT/study.md, OUT/study.png.
#   OUT=docs/vit_study (the results; SIZE=tiny: out/vit_study_tiny)   WORK=out/vit_study (data, checkpoint, runs, logs)
#   MNIST=/usr/share/datasets/fashion-mnist (the IDX files; .gz or not)
#   DATA=WORK/data (vit_study.py prepare writes it when it is missing)   CKPT=WORK/vit.ckpt (trained here when missing)
#   TRAIN_VLM_BIN=./train_vlm   STEPS=6000   BATCH=256 (the eval and timing batch)   PROFILE_ITERS=20
#   N_TRAIN, N_TEST: the first N items of each split (default: all 60000 and 10000)
#   METHODS="none tome pool random"   RATIOS="0.25 0.5 0.75"   (uniform also works)
#   SIZE=tiny: on the CPU in a minute or two: 1000 training items, a tiny ViT trained for 80 steps
#   PYTHON: an interpreter with numpy and matplotlib (default /usr/bin/python3; on the GPU machine: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SIZE:-}" = tiny ]; then WORK=${WORK:-out/vit_study_tiny}; OUT=${OUT:-out/vit_study_tiny}
else WORK=${WORK:-out/vit_study}; OUT=${OUT:-docs/vit_study}; fi
METHODS=${METHODS:-"none tome pool random"}
RATIOS=${RATIOS:-"0.25 0.5 0.75"}
MNIST=${MNIST:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-/usr/bin/python3}
DATA=${DATA:-$WORK/data}
CKPT=${CKPT:-$WORK/vit.ckpt}
mkdir -p "$WORK/runs" "$OUT"
if [ "${SIZE:-}" = tiny ]; then
    BIN=${TRAIN_VLM_BIN:-./train_vlm_cpu}
    [ -x "$BIN" ] || make "${BIN#./}"
    PREP="--n-train ${N_TRAIN:-1000} --n-test ${N_TEST:-300}"
    MODEL="--patch 8 --v-layers 3 --v-dim 16 --v-heads 2"
    TRAIN="--batch 32 --lr 3e-3 --warmup 8 --steps ${STEPS:-80} --eval-interval 0 --eval-records 300"
    BATCH=${BATCH:-32}; PROFILE_ITERS=${PROFILE_ITERS:-3}; DEVICE="--device cpu"
else
    BIN=${TRAIN_VLM_BIN:-./train_vlm}
    case "$BIN" in ./train_vlm|./train_vlm_cpu) make "${BIN#./}" ;; esac  # up to date with the sources
    PREP="--n-train ${N_TRAIN:-0} --n-test ${N_TEST:-0}"
    MODEL="--patch 4 --v-layers 6 --v-dim 128 --v-heads 4"
    TRAIN="--batch 128 --lr 1e-3 --warmup 300 --steps ${STEPS:-6000} --eval-interval 2000 --eval-records 2000"
    BATCH=${BATCH:-256}; PROFILE_ITERS=${PROFILE_ITERS:-20}; DEVICE=""
fi
if [ ! -s "$DATA/test.vlm" ]; then
    $PY data_scripts/vit_study.py prepare --mnist "$MNIST" --out "$DATA" $PREP > "$WORK/prepare.log" \
        || { cat "$WORK/prepare.log" >&2; exit 1; }
fi
# the GPT and CLIP parts of the model are unused by a classifier: the smallest shapes
UNUSED="--l-layers 1 --l-dim 8 --l-heads 1 --t-layers 1 --t-dim 8 --t-heads 1 --clip-dim 8 --projector linear"
if [ ! -s "$CKPT" ]; then
    echo "training the classifier: $BIN --stage classify $MODEL $TRAIN" | tee "$WORK/study.log"
    "$BIN" --stage classify --data-dir "$DATA" $MODEL $UNUSED $TRAIN $DEVICE --checkpoint "$CKPT" --log "$WORK/train.jsonl" \
        > "$WORK/train.log" 2>&1 || { tail -5 "$WORK/train.log" >&2; exit 1; }
    grep "accuracy" "$WORK/train.log" | tail -1 | tee -a "$WORK/study.log"
fi
echo "study: $CKPT on $DATA with $BIN; methods: $METHODS; ratios: $RATIOS" | tee -a "$WORK/study.log"
for m in $METHODS; do
    rs=$RATIOS
    [ "$m" = none ] && rs=0
    [ "$m" = pool ] && rs=0.75
    for r in $rs; do
        name="${m}_$r"
        flags=""
        [ "$m" != none ] && flags="--reduce $m --reduce-ratio $r"
        echo "== $name" | tee -a "$WORK/study.log"
        rm -f "$WORK/runs/$name.jsonl"
        "$BIN" --stage eval --init "$CKPT" --data-dir "$DATA" --batch "$BATCH" $DEVICE $flags --eval-records 0 \
            --profile-iters "$PROFILE_ITERS" --profile-warmup 3 --log "$WORK/runs/$name.jsonl" > "$WORK/runs/$name.log" 2>&1 \
            || { tail -3 "$WORK/runs/$name.log" >&2; exit 1; }
        grep -E "accuracy|images/s" "$WORK/runs/$name.log" | tee -a "$WORK/study.log"
    done
done
$PY data_scripts/vit_study.py report "$WORK" --out "$OUT"
