#!/usr/bin/env bash
# The visual-token reduction study (issue 11): a trained VLM checkpoint, every reduction method
# (none, pool, random, uniform, fastv, salient, tome) at every ratio it takes (0 [none only], 0.25, 0.5,
# 0.75, 0.875; pool 0.75 only; tome: ToMe inside the vision encoder, up to 1 - 1/2^(feature blocks)),
# each run as
#   train_vlm --stage eval     exact match per question type (where on its own), and the logits of
#                              every answer position (--dump-answer-logits: KL and top-1 agreement
#                              against none's, teacher-forced, computed by vlm_study.py)
#   train_vlm --stage profile  analytic LM FLOPs, measured prefill, time to first token, decode step
# then data_scripts/vlm_study.py: OUT/study.csv, OUT/study.md, OUT/acc_vs_flops.png, OUT/acc_vs_latency.png.
#   CKPT=out/vlm/instruct.ckpt (data_scripts/train_vlm.sh's last stage)   SCENES=data/scenes
#   OUT=out/vlm_study   TRAIN_VLM_BIN=./train_vlm   BATCH=64   EVAL_RECORDS=0 (every test question)
#   PROFILE_ITERS=20   FASTV_LAYER (default: train_vlm's, 1)   METHODS, RATIOS: to run fewer
#   SIZE=tiny: on the CPU in a minute or two: a few scenes, a tiny model trained here (e2e, 40 steps;
#   4 ViT blocks, so ToMe's 3 feature blocks can reach R = 0.875)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/vlm_study}
METHODS=${METHODS:-"none pool random uniform fastv salient tome"}
RATIOS=${RATIOS:-"0.25 0.5 0.75 0.875"}
mkdir -p "$OUT/runs"
if [ "${SIZE:-}" = tiny ]; then
    BIN=${TRAIN_VLM_BIN:-./train_vlm_cpu}
    [ -x build/make_scenes ] || make build/make_scenes
    [ -x "$BIN" ] || make "${BIN#./}"
    SCENES=${SCENES:-$OUT/scenes}
    [ -s "$SCENES/test.vlm" ] || ./build/make_scenes --out "$SCENES" --n-train 80 --n-test 20 > "$OUT/scenes.log"
    CKPT=${CKPT:-$OUT/tiny.ckpt}
    if [ ! -s "$CKPT" ]; then
        "$BIN" --stage e2e --data-dir "$SCENES" --patch 16 --v-layers 4 --v-dim 16 --v-heads 2 --l-layers 2 --l-dim 16 --l-heads 2 \
            --t-layers 1 --t-dim 16 --t-heads 2 --clip-dim 16 --batch 8 --lr 3e-3 --warmup 4 --steps 40 --eval-interval 0 \
            --eval-records 20 --checkpoint "$CKPT" --device cpu > "$OUT/train_tiny.log"
    fi
    BATCH=${BATCH:-4}; EVAL_RECORDS=${EVAL_RECORDS:-0}; PROFILE_ITERS=${PROFILE_ITERS:-3}; DEVICE="--device cpu"
else
    BIN=${TRAIN_VLM_BIN:-./train_vlm}
    case "$BIN" in ./train_vlm|./train_vlm_cpu) make "${BIN#./}" ;; esac  # up to date with the sources (the study's flags)
    SCENES=${SCENES:-data/scenes}
    CKPT=${CKPT:-out/vlm/instruct.ckpt}
    BATCH=${BATCH:-64}; EVAL_RECORDS=${EVAL_RECORDS:-0}; PROFILE_ITERS=${PROFILE_ITERS:-20}; DEVICE=""
fi
[ -s "$CKPT" ] || { echo "error: no checkpoint $CKPT (train one: make vlm, or set CKPT)" >&2; exit 1; }
[ -s "$SCENES/test.vlm" ] || { echo "error: no scenes in $SCENES (make scenes, or set SCENES)" >&2; exit 1; }
COMMON="--init $CKPT --data-dir $SCENES --batch $BATCH $DEVICE"
echo "study: $CKPT on $SCENES with $BIN; methods: $METHODS; ratios: $RATIOS" | tee "$OUT/study.log"
for m in $METHODS; do
    rs=$RATIOS
    [ "$m" = none ] && rs=0
    [ "$m" = pool ] && rs=0.75
    for r in $rs; do
        name="${m}_$r"
        flags=""
        [ "$m" != none ] && flags="--reduce $m --reduce-ratio $r"
        [ "$m" = fastv ] && [ -n "${FASTV_LAYER:-}" ] && flags="$flags --fastv-layer $FASTV_LAYER"
        echo "== $name" | tee -a "$OUT/study.log"
        rm -f "$OUT/runs/$name.eval.jsonl"
        "$BIN" --stage eval $COMMON $flags --eval-records "$EVAL_RECORDS" --log "$OUT/runs/$name.eval.jsonl" \
            --dump-answer-logits "$OUT/runs/$name.logits.bin" > "$OUT/runs/$name.eval.log" 2>&1 \
            || { tail -3 "$OUT/runs/$name.eval.log" >&2; exit 1; }
        grep "exact match" "$OUT/runs/$name.eval.log" | tail -1 | tee -a "$OUT/study.log"
        "$BIN" --stage profile $COMMON $flags --profile-iters "$PROFILE_ITERS" --profile-warmup 2 \
            --profile-out "$OUT/runs/$name.profile.csv" > "$OUT/runs/$name.profile.log" 2>&1 \
            || { tail -3 "$OUT/runs/$name.profile.log" >&2; exit 1; }
    done
done
# PYTHON: an interpreter with numpy and matplotlib (Debian's python3 with python3-numpy and
# python3-matplotlib; on a machine where those live elsewhere, e.g. PYTHON=python3)
${PYTHON:-/usr/bin/python3} data_scripts/vlm_study.py "$OUT"
