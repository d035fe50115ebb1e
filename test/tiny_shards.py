"""Writes a tiny pair of byte-level token shards (train.bin, val.bin) for the
CLI tests: a numbered pangram, vocab 256, in the shard format of
src/dataloader.h (256 int32 header: magic, version, count, vocab; uint16 tokens).

usage: tiny_shards.py DIR [VAL_LINES] [LINE]   (VAL_LINES: lines in val.bin, default 60;
       LINE: the line template, "{}" becomes the line number; default the pangram)
"""
import os
import struct
import sys


def shard(path, text):
    b = text.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20261123, 1, len(b), 256, *([0] * 252)))
        f.write(bytes(x for c in b for x in (c, 0)))


def main():
    d = sys.argv[1]
    val_lines = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    os.makedirs(d)
    line = (sys.argv[3] if len(sys.argv) > 3 else "{} the quick brown fox jumps over the lazy dog.") + "\n"
    shard(f"{d}/train.bin", "".join(line.format(i) for i in range(400)))
    shard(f"{d}/val.bin", "".join(line.format(i) for i in range(400, 400 + val_lines)))


if __name__ == "__main__":
    main()
