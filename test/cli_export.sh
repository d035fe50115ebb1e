#!/usr/bin/env bash
# End-to-end check of `train_mamba --resume CKPT --export-hf DIR` (the CPU
# build, train_mamba_cpu): train a tiny model a few steps, export it, and read
# the export back in Python (json + struct only, no safetensors package):
# Hugging Face's tensor names and shapes, the values bit for bit against the
# checkpoint, a well-formed safetensors file, and a config.json whose keys
# match the checkpoint's config. Bad uses give a clear message and a nonzero
# exit. Ends with "N passed, N failed". (Loading into transformers is
# test/hf_check.py, run on the GPU machine.)
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_mamba_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_export_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if ! $BIN --help 2>&1 | grep -q -- "--export-hf"; then
    fail "$BIN has --export-hf" "the option is missing"
    echo "$passed passed, $failed failed"; exit 1
fi

/usr/bin/python3 test/tiny_shards.py "$tmp/data"
ARGS="--data-dir $tmp/data --d-model 32 --n-layer 2 --d-state 8 --batch 4 --seq-len 48 --lr 3e-3 --warmup 2 --steps 6 --eval-interval 0 --log-every 3"
if $BIN $ARGS --checkpoint "$tmp/model.ckpt" > "$tmp/train.out" 2>&1; then pass "trains 6 steps with a checkpoint"
else fail "trains 6 steps with a checkpoint" "$(tail -3 "$tmp/train.out")"; fi

# export into a directory that does not exist yet (mkdir -p)
if $BIN --resume "$tmp/model.ckpt" --export-hf "$tmp/hf/model" > "$tmp/export.out" 2>&1; then pass "--export-hf exits 0"
else fail "--export-hf exits 0" "$(tail -3 "$tmp/export.out")"; fi
[ -f "$tmp/hf/model/model.safetensors" ] && [ -f "$tmp/hf/model/config.json" ] \
    && pass "writes model.safetensors and config.json" || fail "writes model.safetensors and config.json" "$(ls -R "$tmp/hf" 2>&1)"
ls "$tmp/hf/model"/*.tmp >/dev/null 2>&1 && fail "no .tmp left behind" || pass "no .tmp left behind"

# the reader: our checkpoint (src/checkpoint.h) and the export, compared tensor by tensor
/usr/bin/python3 - "$tmp/model.ckpt" "$tmp/hf/model" > "$tmp/check.out" 2>&1 <<'PY'
import json, struct, sys

ckpt_path, out_dir = sys.argv[1], sys.argv[2]
passed = failed = 0
def report(ok, name, why=""):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
    passed += ok; failed += not ok

# the checkpoint: magic, version, header length, "key=value" lines, data at a 64-byte boundary
raw = open(ckpt_path, "rb").read()
H = struct.unpack_from("<Q", raw, 8)[0]
lines = raw[16:16 + H].decode().splitlines()
data_start = (16 + H + 63) // 64 * 64
cfg = {k[len("config."):]: int(v) for k, v in (l.split("=", 1) for l in lines) if k.startswith("config.")}
params = {}
for l in lines:
    if l.startswith("tensor=param "):
        _, name, dtype, off, shape = l[len("tensor="):].split()
        dims = [int(d) for d in shape.split("x")]
        n = 1
        for d in dims: n *= d
        params[name] = (dims, raw[data_start + int(off):data_start + int(off) + 4 * n])
V, D, L, N, K = cfg["vocab_size"], cfg["d_model"], cfg["n_layer"], cfg["d_state"], cfg["d_conv"]
E, R = cfg["expand"] * D, cfg["dt_rank"]

# the safetensors file, checked as the reference reader does
buf = open(out_dir + "/model.safetensors", "rb").read()
(n,) = struct.unpack_from("<Q", buf, 0)
report(8 + n <= len(buf), "safetensors header length within the file", f"{n} vs {len(buf)}")
header = json.loads(buf[8:8 + n].decode("utf-8"))
report((8 + n) % 8 == 0, "safetensors data 8-byte aligned", 8 + n)
report(header.get("__metadata__") == {"format": "pt"}, "__metadata__ is {format: pt}", header.get("__metadata__"))
tensors = {k: v for k, v in header.items() if k != "__metadata__"}
spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in tensors.items())
pos, tiled = 0, True
for b, e, k in spans:
    tiled &= b == pos
    pos = e
report(tiled and 8 + n + pos == len(buf), "tensors tile the data exactly (no gaps, no overlap, no tail)")
report(all(v["dtype"] == "F32" for v in tensors.values()), "every tensor is F32")

# expected: HF MambaForCausalLM names and shapes
expect = {"backbone.embeddings.weight": ("embedding.weight", [V, D]), "backbone.norm_f.weight": ("norm_f.weight", [D])}
for l in range(L):
    o, h = f"layers.{l}.", f"backbone.layers.{l}."
    expect[h + "norm.weight"] = (o + "norm.weight", [D])
    for name, shape in [("in_proj.weight", [2 * E, D]), ("conv1d.weight", [E, 1, K]), ("conv1d.bias", [E]),
                        ("x_proj.weight", [R + 2 * N, E]), ("dt_proj.weight", [E, R]), ("dt_proj.bias", [E]),
                        ("A_log", [E, N]), ("D", [E]), ("out_proj.weight", [D, E])]:
        expect[h + "mixer." + name] = (o + name, shape)
missing = sorted(set(expect) - set(tensors))
extra = sorted(set(tensors) - set(expect))
report(not missing, "every HF tensor name present", missing)
report(not extra, "no extra tensors (lm_head is tied, not stored)", extra)
bad_shape = [k for k in expect if k in tensors and tensors[k]["shape"] != expect[k][1]]
report(not bad_shape, "HF shapes (conv1d as (E, 1, K))", [(k, tensors[k]["shape"]) for k in bad_shape])
bad_bits = []
for k, (ours, _) in expect.items():
    if k not in tensors or ours not in params:
        bad_bits.append(k); continue
    b, e = tensors[k]["data_offsets"]
    if buf[8 + n + b:8 + n + e] != params[ours][1]:
        bad_bits.append(k)
report(not bad_bits and len(params) == len(expect), "values bitwise equal to the checkpoint", bad_bits or len(params))

# config.json: HF MambaConfig keys, matching the checkpoint
c = json.load(open(out_dir + "/config.json"))
want = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": V, "hidden_size": D,
        "state_size": N, "num_hidden_layers": L, "expand": cfg["expand"], "conv_kernel": K, "intermediate_size": E,
        "time_step_rank": R, "use_bias": False, "use_conv_bias": True, "hidden_act": "silu",
        "layer_norm_epsilon": 1e-5, "residual_in_fp32": True, "tie_word_embeddings": True,
        "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}
wrong = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v or type(c.get(k)) != type(v)}
report(not wrong, "config.json keys and values", wrong)
sys.exit(1 if failed else 0)
PY
rc=$?
cat "$tmp/check.out"
p=$(grep -c '^PASS' "$tmp/check.out"); f=$(grep -c '^FAIL' "$tmp/check.out")
passed=$((passed + p)); failed=$((failed + f))
[ $rc -ne 0 ] && [ "$f" -eq 0 ] && fail "python reader ran" "exit $rc: $(tail -3 "$tmp/check.out")"

# exporting again over an existing export replaces it (same bytes: same checkpoint)
cp "$tmp/hf/model/model.safetensors" "$tmp/first.safetensors"
$BIN --resume "$tmp/model.ckpt" --export-hf "$tmp/hf/model" > /dev/null 2>&1 \
    && cmp -s "$tmp/first.safetensors" "$tmp/hf/model/model.safetensors" \
    && pass "re-export over an existing directory, same bytes" || fail "re-export over an existing directory, same bytes"

# bad uses: clear message, nonzero exit
expect_error "--export-hf needs --resume" "need --resume" $BIN --export-hf "$tmp/x"
expect_error "--export-hf with a missing checkpoint" "cannot open checkpoint" $BIN --resume "$tmp/none.ckpt" --export-hf "$tmp/x"
touch "$tmp/a_file"
expect_error "--export-hf onto a file" "not a directory" $BIN --resume "$tmp/model.ckpt" --export-hf "$tmp/a_file"
expect_error "--export-hf under a file" "cannot create directory" $BIN --resume "$tmp/model.ckpt" --export-hf "$tmp/a_file/sub"
finish
