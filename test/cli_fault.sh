#!/usr/bin/env bash
# Fault injection on train_mamba's checkpoints (the CPU build, train_mamba_cpu):
#  a. SIGKILL at random moments of a run that checkpoints every step: whatever
#     checkpoint is left must load, and the resumed run must reproduce an
#     uninterrupted run's losses exactly (so no checkpoint is torn or stale);
#  b. a full disk: the failed save exits nonzero with a clear message and leaves
#     the previous checkpoint byte-identical and resumable.
# Ends with "N passed, N failed". CLI_FAULT_DISK=ulimit forces the non-root
# fallback of b (a file-size limit instead of a tiny tmpfs).
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_mamba_cpu}
KILLS=${CLI_FAULT_KILLS:-20}
source test/testlib.sh
# without the binary every kill would pass as "before the first checkpoint"
[ -x "$BIN" ] || { echo "FAIL $BIN not found (make train_mamba_cpu)"; echo "0 passed, 1 failed"; exit 1; }
tmp=$(mktemp -d /tmp/cli_fault_XXXXXX)
disk="$tmp/disk"; mounted=0
cleanup() { [ $mounted -eq 1 ] && umount "$disk" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# one thread: the tiny model runs fastest so, and the losses stay bit-reproducible
export OMP_NUM_THREADS=1

/usr/bin/python3 test/tiny_shards.py "$tmp/data"
# ~1 ms a step with a checkpoint each step: a kill within 300 ms lands mid-run
ARGS="--data-dir $tmp/data --d-model 16 --n-layer 1 --d-state 4 --batch 2 --seq-len 16 --steps 2000 --eval-interval 0 --log-every 1000"

# last complete training step in a JSONL log (a kill can cut the last line); 0 if none
last_step() {
    /usr/bin/python3 -c '
import json, sys
s = 0
for line in open(sys.argv[1], errors="replace"):
    try: r = json.loads(line)
    except ValueError: continue
    if isinstance(r, dict) and "loss" in r: s = r["step"]
print(s)' "$1" 2>/dev/null || echo 0
}

# a. SIGKILL at random moments
max_step=0; with_ckpt=0
for i in $(seq 1 "$KILLS"); do
    ck="$tmp/k$i.ckpt"
    ms=$(( i == 1 ? 1 : RANDOM % 300 + 1 ))  # the first kill comes before any checkpoint
    $BIN $ARGS --checkpoint "$ck" --checkpoint-interval 1 --log "$tmp/k$i.jsonl" > "$tmp/k$i.out" 2>&1 &
    pid=$!
    sleep "$(printf '0.%03d' "$ms")"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    name="kill $i after ${ms} ms"
    if [ ! -e "$ck" ]; then
        # killed before the first save: nothing may sit at the checkpoint path
        # (a partial $ck.tmp is allowed)
        pass "$name: before the first checkpoint, no partial file"
        continue
    fi
    with_ckpt=$((with_ckpt + 1))
    # the checkpoint is that of the last logged step or the one before; resume
    # (same path, as a user restarting the command would) 2 steps past it
    stop=$(( $(last_step "$tmp/k$i.jsonl") + 2 ))
    if $BIN $ARGS --resume "$ck" --checkpoint "$ck" --stop-at "$stop" --log "$tmp/resumed$i.jsonl" > "$tmp/r$i.out" 2>&1 \
        && [ -s "$ck" ] && [ ! -e "$ck.tmp" ]; then
        pass "$name: the checkpoint loads and the run resumes to step $stop"
        [ "$stop" -gt "$max_step" ] && max_step=$stop
    else
        fail "$name: resume from the surviving checkpoint" "$(tail -3 "$tmp/r$i.out")"
    fi
done
[ "$with_ckpt" -ge $((KILLS / 2)) ] && pass "most kills ($with_ckpt of $KILLS) came after a checkpoint" \
    || fail "most kills came after a checkpoint" "only $with_ckpt of $KILLS: the trainer starts too slowly for this test?"
# every resumed step must equal the uninterrupted run's: a checkpoint mixing two
# steps (parameters of one, optimizer or data position of another) would not
if [ "$max_step" -gt 0 ]; then
    $BIN $ARGS --stop-at "$max_step" --log "$tmp/uninterrupted.jsonl" > "$tmp/ref.out" 2>&1 || fail "uninterrupted reference run" "$(tail -3 "$tmp/ref.out")"
    if out=$(/usr/bin/python3 - "$tmp" 2>&1 <<'PY'
import glob, json, sys
def losses(p): return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
ref = losses(sys.argv[1] + "/uninterrupted.jsonl")
n = 0
for p in glob.glob(sys.argv[1] + "/resumed*.jsonl"):
    got = losses(p)
    assert got, f"{p}: the resumed run logged no step"
    bad = [(s, ref.get(s), l) for s, l in got.items() if ref.get(s) != l]
    assert not bad, f"{p}: (step, uninterrupted, resumed) {bad[:3]}"
    n += len(got)
print(f"{n} resumed steps")
PY
    ); then pass "resumed runs reproduce the uninterrupted losses exactly ($out)"
    else fail "resumed runs reproduce the uninterrupted losses exactly" "$(tail -2 <<<"$out")"; fi
fi

# b. full disk: a tiny tmpfs as root; elsewhere a file-size limit (EFBIG)
mkdir -p "$disk"
if [ "${CLI_FAULT_DISK:-}" != ulimit ] && [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=512k tmpfs "$disk" 2>/dev/null; then
    mounted=1; how="tmpfs"
else
    how="ulimit -f"
fi
ck="$disk/c.ckpt"
$BIN $ARGS --steps 4 --checkpoint "$ck" > "$tmp/d1.out" 2>&1 && [ -s "$ck" ] \
    && pass "full disk ($how): a first checkpoint is written" || fail "full disk ($how): a first checkpoint is written" "$(tail -3 "$tmp/d1.out")"
sum_before=$(sha256sum "$ck" 2>/dev/null | cut -d' ' -f1)
# resume and save again into a disk with 16 KB left (the checkpoint is ~75 KB):
# the save fails part-way through
if [ $mounted -eq 1 ]; then
    avail=$(df --output=avail -B1 "$disk" | tail -1)
    head -c $((avail - 16384)) /dev/zero > "$disk/fill" 2>/dev/null
    $BIN $ARGS --steps 8 --resume "$ck" --checkpoint "$ck" --checkpoint-interval 1 > "$tmp/d2.out" 2>&1; rc=$?
else
    # SIGXFSZ ignored, so an over-limit write fails with EFBIG instead of killing
    ( trap '' XFSZ; ulimit -f 16; exec $BIN $ARGS --steps 8 --resume "$ck" --checkpoint "$ck" --checkpoint-interval 1 ) \
        > "$tmp/d2.out" 2>&1; rc=$?
fi
if [ $rc -ne 0 ] && grep -qiE "disk full|failed writing checkpoint" "$tmp/d2.out"; then
    pass "full disk ($how): the failed save exits nonzero with a clear message"
else
    fail "full disk ($how): the failed save exits nonzero with a clear message" "rc=$rc, $(tail -3 "$tmp/d2.out")"
fi
[ -n "$sum_before" ] && [ "$(sha256sum "$ck" | cut -d' ' -f1)" = "$sum_before" ] \
    && pass "full disk ($how): the previous checkpoint is byte-identical" || fail "full disk ($how): the previous checkpoint is byte-identical"
[ ! -e "$ck.tmp" ] && pass "full disk ($how): the partial .tmp is removed" || fail "full disk ($how): the partial .tmp is removed"
rm -f "$disk/fill"
$BIN $ARGS --steps 8 --resume "$ck" --checkpoint "$tmp/after.ckpt" > "$tmp/d3.out" 2>&1 \
    && pass "full disk ($how): the previous checkpoint still resumes" || fail "full disk ($how): the previous checkpoint still resumes" "$(tail -3 "$tmp/d3.out")"

finish
