#!/usr/bin/env bash
# The VLM's main job (`make vlm`): Fashion-MNIST scenes, the build, the stages
# clip -> lm -> align -> instruct, the evaluation table and the loss plots, on
# the GPU when there is one (a useful size) and on the CPU otherwise (a tiny
# configuration that finishes in about 15 minutes on 2 cores). The last lines
# are the accuracy table. Extra arguments go to every train_vlm stage.
#   OUT=out/vlm: logs, checkpoints, plots;  SCENES=data/scenes: the data
#   N_TRAIN=30000: training scenes;  STEPS="8000 2000 1500 20000": steps of clip, lm, align, instruct
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/vlm}; SCENES=${SCENES:-data/scenes}
mkdir -p "$OUT"
make build/make_scenes train_vlm
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ldd ./train_vlm 2>/dev/null | grep -q cublas; then gpu=1; fi
if [ $gpu = 1 ]; then
    n_train=10000
    MODEL="--patch 8 --v-layers 4 --v-dim 128 --v-heads 4 --l-layers 4 --l-dim 128 --l-heads 4 --t-layers 2 --t-dim 128 --t-heads 4 --clip-dim 128"
    RUN="--batch 64 --eval-records 1000"
    steps=(3000 2000 1500 6000)
else
    # CPU: 16x16 patches (16 tokens an image) and 48-wide models keep a step in tens of milliseconds
    n_train=4000
    MODEL="--patch 16 --v-layers 2 --v-dim 48 --v-heads 4 --l-layers 2 --l-dim 48 --l-heads 4 --t-layers 1 --t-dim 48 --t-heads 4 --clip-dim 48"
    RUN="--batch 32 --eval-records 500 --device cpu"
    steps=(600 400 300 2000)
fi
n_train=${N_TRAIN:-$n_train}
[ -n "${STEPS:-}" ] && read -r -a steps <<<"$STEPS"
[ -s "$SCENES/train.vlm" ] && [ -s "$SCENES/test.vlm" ] || ./build/make_scenes --out "$SCENES" --n-train $n_train --n-test 1000
stages=(clip lm align instruct)
lrs=(1e-3 1e-3 2e-3 1e-3)
prev=""
start=$(date +%s)
for i in 0 1 2 3; do
    s=${stages[$i]}
    echo "==== stage $s (${steps[$i]} steps)"
    ./train_vlm --stage "$s" --data-dir "$SCENES" $MODEL $RUN --steps "${steps[$i]}" --lr "${lrs[$i]}" --warmup 100 \
        --eval-interval $(( ${steps[$i]} / 4 )) --log "$OUT/$s.jsonl" --checkpoint "$OUT/$s.ckpt" ${prev:+--init "$prev"} "$@" \
        | tee "$OUT/$s.log" | grep -E "^step .*(\| test|CLIP)|summary|starts from|^model"
    prev="$OUT/$s.ckpt"
done
/usr/bin/python3 data_scripts/plot_log.py "$OUT"/clip.jsonl "$OUT"/lm.jsonl "$OUT"/align.jsonl "$OUT"/instruct.jsonl -o "$OUT/vlm_loss.png" \
    || echo "(plot skipped)"
./train_vlm --stage eval --data-dir "$SCENES" --init "$prev" $RUN --eval-records 0 > "$OUT/eval.log"
grep "^Q:" "$OUT/eval.log"
elapsed=$(( $(date +%s) - start ))
echo "==== $( [ $gpu = 1 ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo CPU ), $((elapsed / 60))m$((elapsed % 60))s for all stages"
grep -E "CLIP" "$OUT/clip.log" | tail -1
/usr/bin/python3 - "$OUT/eval.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if "exact match" in l][-1]
overall = re.search(r"exact match ([0-9.]+)%", line).group(1)
print("| question type | exact match (test scenes) |\n|---|---|")
for name, acc in re.findall(r"(\w+) ([0-9.]+)%", line.split("(", 1)[1]):
    print(f"| {name} | {acc}% |")
print(f"| all | {overall}% |")
PY
