#!/usr/bin/env bash
# One call on the GPU machine: run what is asked, log everything under $OUT
# (or out/), print a short table last. Binaries are built beforehand (make
# train_mamba test-gpu dev) so no device time goes to compiling.
#   bash test/gpu_session.sh tests bench130m kjv=4 hf lora dev
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
summary=()
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for task in "$@"; do
    case $task in
    tests)
        bash test/run_tests.sh gpu > "$OUT/test_gpu.log" 2>&1
        grep -E "^FAIL" "$OUT/test_gpu.log" | head -30
        summary+=("test-gpu: $(tail -1 "$OUT/test_gpu.log")") ;;
    bench130m)
        # mamba-130m shape, random tokens: plain timing run, then a profiled run
        B130="--random-data --vocab 50280 --d-model 768 --n-layer 24 --batch 8 --seq-len 1024 --eval-interval 0 --log-every 5"
        ./train_mamba $B130 --steps 15 > "$OUT/bench130m.log" 2>&1
        ./train_mamba $B130 --steps 4 --profile 3 > "$OUT/bench130m_profile.log" 2>&1
        tail -3 "$OUT/bench130m.log"; grep -A30 "per-component" "$OUT/bench130m_profile.log"
        summary+=("mamba-130m fp32/tf32: $(grep summary "$OUT/bench130m.log")") ;;
    kjv=*)
        mins=${task#kjv=}
        ./train_mamba --d-model 512 --n-layer 8 --batch 16 --seq-len 512 --lr 1.5e-3 --warmup 200 --steps 3000 \
            --max-minutes "$mins" --eval-interval 250 --sample-interval 100000 --sample-len 400 \
            --log "$OUT/kjv_gpu.jsonl" --checkpoint "$OUT/kjv_gpu.ckpt" > "$OUT/kjv_gpu.log" 2>&1
        tail -4 "$OUT/kjv_gpu.log"
        ./train_mamba --resume "$OUT/kjv_gpu.ckpt" --sample 400 --prompt "And God said" --temperature 0.8 --top-k 40 > "$OUT/kjv_sample.txt" 2>&1
        cat "$OUT/kjv_sample.txt"; rm -f "$OUT/kjv_gpu.ckpt"
        summary+=("kjv: $(grep 'val loss' "$OUT/kjv_gpu.log" | tail -1)") ;;
    hf)
        # a model trained here, exported, loaded by transformers.MambaForCausalLM
        rm -rf /tmp/hf; /usr/bin/env python3 test/tiny_shards.py /tmp/hf/data
        ./train_mamba --data-dir /tmp/hf/data --d-model 64 --n-layer 2 --batch 8 --seq-len 64 --steps 300 \
            --eval-interval 0 --checkpoint /tmp/hf/m.ckpt > "$OUT/hf_train.log" 2>&1
        ./train_mamba --resume /tmp/hf/m.ckpt --export-hf /tmp/hf/out >> "$OUT/hf_train.log" 2>&1
        python3 test/hf_check.py /tmp/hf/out /tmp/hf/m.ckpt ./train_mamba "12 the quick" > "$OUT/hf_check.log" 2>&1
        grep -E "^FAIL|passed" "$OUT/hf_check.log"
        summary+=("transformers check: $(tail -1 "$OUT/hf_check.log")") ;;
    lora)
        # the LoRA study (make lora-study): KJV pretraining, nine fine-tunings on the fortunes
        OUT="$OUT/lora_study" bash data_scripts/lora_study.sh > "$OUT/lora_study.log" 2>&1
        tail -16 "$OUT/lora_study.log"
        summary+=("lora-study: $(grep -c '^| LoRA\|^| full' "$OUT/lora_study/results.md" 2>/dev/null) rows in lora_study/results.md") ;;
    dev)
        bash dev/run_all.sh > "$OUT/dev.log" 2>&1
        summary+=("dev: see dev.log") ; cat "$OUT/dev.log" | tail -60 ;;
    esac
done
echo "================ summary"
for s in "${summary[@]}"; do echo "$s"; done
