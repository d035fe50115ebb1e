#!/usr/bin/env bash
# make bench: the mamba-130m shape on this GPU, beside the figures it is compared to.
#   training step (batch 8 x 1024, vocab 50280, random tokens): tokens/s, ms/step, peak
#   memory (--matmul tf32 and bf16), the memory breakdown, the per-component time (--profile)
#   and each component's distance to its floor (data_scripts/step_floor.py)
#   generation: us/token at batch 1, 8, 64 against the weight-read floor (--bench-generate)
#   the mamba2-130m shape (24 Mamba-2 blocks, d_state 128, headdim 64): its training step and generation
#   a hybrid of 21 Mamba-2 and 3 attention layers (M2*7,A three times): generation (KV caches of 512 positions)
# Logs under $OUT (default out/bench); the table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}; mkdir -p "$OUT"
make train_mamba >/dev/null || exit 1
if ! (command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ldd ./train_mamba | grep -q cublas); then
    echo "make bench needs a GPU and a CUDA build of train_mamba" >&2; exit 1
fi
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
M130="--random-data --vocab 50280 --d-model 768 --n-layer 24 --batch 8 --seq-len 1024 --eval-interval 0 --log-every 5"
./train_mamba $M130 --steps 30 --matmul tf32 > "$OUT/step_tf32.log" 2>&1
./train_mamba $M130 --steps 30 --matmul bf16 > "$OUT/step.log" 2>&1
./train_mamba $M130 --steps 4 --profile 3 --matmul bf16 > "$OUT/profile.log" 2>&1
# generation from a 130m-shaped checkpoint (weights after one step: the speed does not depend on them)
./train_mamba $M130 --steps 1 --checkpoint /tmp/bench130m.ckpt > /dev/null 2>&1
./train_mamba --resume /tmp/bench130m.ckpt --bench-generate > "$OUT/generate.log" 2>&1 || echo "(generation benchmark failed: $OUT/generate.log)"
rm -f /tmp/bench130m.ckpt
./train_mamba --random-data --vocab 50280 --d-model 768 --layers "M2*24" --batch 8 --seq-len 1024 --eval-interval 0 \
    --log-every 5 --steps 10 --checkpoint /tmp/bench_m2.ckpt > "$OUT/mamba2_step.log" 2>&1
./train_mamba --resume /tmp/bench_m2.ckpt --bench-generate > "$OUT/generate_m2.log" 2>&1 || echo "(mamba2 generation benchmark failed: $OUT/generate_m2.log)"
rm -f /tmp/bench_m2.ckpt
./train_mamba --random-data --vocab 50280 --d-model 768 --layers "M2*7,A,M2*7,A,M2*7,A" --batch 8 --seq-len 1024 \
    --eval-interval 0 --log-every 5 --steps 1 --checkpoint /tmp/bench_hybrid.ckpt > /dev/null 2>&1
./train_mamba --resume /tmp/bench_hybrid.ckpt --bench-generate > "$OUT/generate_hybrid.log" 2>&1 || echo "(hybrid generation benchmark failed: $OUT/generate_hybrid.log)"
rm -f /tmp/bench_hybrid.ckpt
/usr/bin/python3 - "$GPU" "$OUT" <<'PY'
import re, sys
gpu, out = sys.argv[1], sys.argv[2]
step = open(out + "/step.log").read()
mem = re.search(r"memory: (.*)", step)
print(f"\n== make bench on {gpu}\n")
print("mamba-130m training step, batch 8 x 1024 (fp32 master weights and residual stream; --matmul tf32: fp32 activations, "
      "TF32 matmuls; --matmul bf16: bf16 activations and matmul operands)")
print("| | tokens/s | ms/step | peak memory |\n|---|---|---|---|")
for log, what in (("step_tf32.log", "--matmul tf32"), ("step.log", "--matmul bf16 (default)")):
    m = re.search(r"summary: ([0-9.]+) ms/step, ([0-9]+) tokens/s, peak memory ([0-9]+) MiB", open(out + "/" + log).read())
    if m:
        print(f"| this project, {what} ({gpu}) | {int(m.group(2)) / 1000:.1f}k | {float(m.group(1)):.1f} | {int(m.group(3)) / 1024:.2f} GiB |")
    else:
        print(f"| this project, {what} | (failed: see {log}) | | |")
print("| official mamba_ssm + causal_conv1d, bf16 (H100, anchors) | 122k | 67 | 10.3 GB |")
print("| official mamba_ssm + causal_conv1d, bf16 (H200, anchors) | 115.3k | 71.1 | 9.27 GiB |")
if mem:
    print("\n" + mem.group(0))
prof = open(out + "/profile.log").read()
i = prof.find("per-component")
if i >= 0:
    print("\n" + prof[i:].strip())
    print("\nthe bf16 step against its floor (data_scripts/step_floor.py; bf16 activations):")
    sys.stdout.flush()
    import subprocess
    subprocess.run(["/usr/bin/python3", "data_scripts/step_floor.py", out + "/profile.log", "--matmul", "bf16", "--activations", "bf16"])
m2 = re.search(r"summary: ([0-9.]+) ms/step, ([0-9]+) tokens/s, peak memory ([0-9]+) MiB", open(out + "/mamba2_step.log").read())
print("\nmamba2-130m training step, batch 8 x 1024 (24 Mamba-2 blocks, d_state 128, headdim 64; fp32, bf16 matmul operands)")
print("| | tokens/s | ms/step | peak memory |\n|---|---|---|---|")
if m2:
    print(f"| this project ({gpu}) | {int(m2.group(2)) / 1000:.1f}k | {float(m2.group(1)):.1f} | {int(m2.group(3)) / 1024:.2f} GiB |")
else:
    print("| this project | (failed: see mamba2_step.log) | | |")
print("| official mamba_ssm Mamba-2 (Triton SSD), bf16 (H100, anchors) | 38.7k | 212 | 10.3 GB |")
gen = open(out + "/generate.log").read().strip()
print("\ngeneration (anchors: official generate with CUDA graphs 1.60 ms/token at batch 1, H100, bf16; "
      "weight-read floor 87 us in bf16, twice that for fp32 weights)")
print(gen if gen else "(no output)")
gen2 = open(out + "/generate_m2.log").read().strip()
print("\nmamba2-130m generation (the layered step: an M2 layer as the in_proj GEMV with the step's prologue, "
      "mamba2_step_tail and the out_proj GEMV, in a CUDA graph)")
print(gen2 if gen2 else "(no output)")
gen3 = open(out + "/generate_hybrid.log").read().strip()
print("\nhybrid generation: 21 M2 + 3 A layers (M2*7,A three times; the attention step over the KV cache split over the keys)")
print(gen3 if gen3 else "(no output)")
PY
