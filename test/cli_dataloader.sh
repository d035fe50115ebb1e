#!/usr/bin/env bash
# End-to-end data pipeline check: data_scripts/prepare_kjv.py into a temp dir,
# shards decode back to the .txt files, the split is as documented, and
# build/test_dataloader opens the shards. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_dataloader_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
PY=/usr/bin/python3

# without `bible` on PATH: exit 1 and tell the user what to install
out=$(PATH=/nonexistent $PY data_scripts/prepare_kjv.py "$tmp/none" 2>&1); rc=$?
check "missing bible program: exit 1" test "$rc" -eq 1
check "missing bible program: says how to install" grep -q "apt-get install bible-kjv" <<<"$out"

if ! command -v bible >/dev/null; then
    echo "SKIP the rest: bible-kjv is not installed"
    finish; exit
fi

check "prepare_kjv.py runs" $PY data_scripts/prepare_kjv.py "$tmp/kjv"
for f in train.bin val.bin train.txt val.txt; do check "writes $f" test -s "$tmp/kjv/$f"; done

# shards: header fields right and tokens == bytes of the .txt
check "shards decode to the text files" $PY - "$tmp/kjv" <<'EOF'
import struct, sys
d = sys.argv[1]
for name in ("train", "val"):
    raw = open(f"{d}/{name}.bin", "rb").read()
    h = struct.unpack("<256i", raw[:1024])
    txt = open(f"{d}/{name}.txt", "rb").read()
    assert h[:4] == (20261123, 1, len(txt), 256) and not any(h[4:]), h[:4]
    assert len(raw) == 1024 + 2 * len(txt)
    assert raw[1024::2] == txt and not any(raw[1025::2])
EOF

# split: 1189 chapters, 31102 verses in all; val = chapters with index % 20 == 19
check "split follows chapter index % 20 == 19" $PY - "$tmp/kjv" <<'EOF'
import re, sys
d = sys.argv[1]
def chapters(name):
    out = []
    for line in open(f"{d}/{name}.txt"):
        m = re.match(r"^(.+?) (\d+):(\d+) \S", line)
        assert m, line
        key = (m.group(1), int(m.group(2)))
        if not out or out[-1] != key: out.append(key)
    return out
tr, va = chapters("train"), chapters("val")
lines = sum(1 for _ in open(f"{d}/train.txt")) + sum(1 for _ in open(f"{d}/val.txt"))
assert len(tr) + len(va) == 1189 and len(va) == 59 and lines == 31102, (len(tr), len(va), lines)
assert va[0] == ("Genesis", 20) and tr[0] == ("Genesis", 1) and tr[-1] == ("Revelation", 22)
EOF

check "first line is Genesis 1:1" grep -qx "Genesis 1:1 In the beginning God created the heaven and the earth." <(head -1 "$tmp/kjv/train.txt")

if [ -x build/test_dataloader ]; then
    check "dataloader opens train.bin (B=64 T=1024)" build/test_dataloader open "$tmp/kjv/train.bin" 64 1024
    check "dataloader opens val.bin (B=8 T=1024)" build/test_dataloader open "$tmp/kjv/val.bin" 8 1024
else
    fail "build/test_dataloader not built"
fi
finish
