#!/usr/bin/env python3
"""Prepare the fortune-cookie collection as byte-level token shards: the second
corpus of the LoRA study (fine-tuning a KJV-trained model on it).

Source: Debian's fortunes package (`sudo apt-get install fortunes`), which puts
plain-text files under /usr/share/games/fortunes/ (art, computers, ..., zippy;
with fortunes-min: fortunes, literature, riddles). Each file holds fortunes
separated by lines containing only "%". The .dat (index) and .u8 (UTF-8 copies)
files are skipped.

Text: every fortune as in its file, with old terminal overstriking ("X\\bX",
"_\\bX") reduced to the plain character, followed by a line "%" (the fortune's
end, so the model learns where one stops). Bytes are kept as they are.

Split: fortunes are numbered 0, 1, 2, ... over the files in name order, each
file in order. Fortune index % 20 == 19 goes to val (5%), the rest to train, so
no val fortune is seen in training.

Tokens: byte level, vocab 256, the shard format of prepare_kjv.py:
    train.bin, val.bin  256 little-endian int32 header
                        [20261123 magic, 1 version, n tokens, 256 vocab, 0...]
                        followed by n little-endian uint16 tokens
    train.txt, val.txt  the same text, for reading

Usage: python3 data_scripts/prepare_fortunes.py [out_dir]   (default data/fortunes)
"""
import os
import re
import struct
import sys

SRC = "/usr/share/games/fortunes"
MAGIC, VERSION, VOCAB = 20261123, 1, 256
VAL_EVERY = 20
OVERSTRIKE = re.compile(rb".\x08")


def read_fortunes():
    if not os.path.isdir(SRC):
        sys.exit(f"error: {SRC} not found.\nInstall the fortunes with:  sudo apt-get install fortunes")
    names = sorted(n for n in os.listdir(SRC) if not n.endswith((".dat", ".u8")) and
                   os.path.isfile(os.path.join(SRC, n)) and not os.path.islink(os.path.join(SRC, n)))
    out = []
    for n in names:
        raw = OVERSTRIKE.sub(b"", open(os.path.join(SRC, n), "rb").read())
        for piece in re.split(rb"^%\n", raw, flags=re.M):
            piece = piece.strip(b"\n")
            if piece:
                out.append(piece + b"\n%\n")
    if len(out) < 1000:
        sys.exit(f"error: only {len(out)} fortunes found in {SRC}: is the fortunes package complete?")
    return names, out


def write_shard(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<256i", MAGIC, VERSION, len(data), VOCAB, *([0] * 252)))
        f.write(struct.pack(f"<{len(data)}H", *data))
    os.replace(tmp, path)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "data/fortunes"
    names, fortunes = read_fortunes()
    train = b"".join(f for i, f in enumerate(fortunes) if i % VAL_EVERY != VAL_EVERY - 1)
    val = b"".join(f for i, f in enumerate(fortunes) if i % VAL_EVERY == VAL_EVERY - 1)
    os.makedirs(out_dir, exist_ok=True)
    for split, data in (("train", train), ("val", val)):
        open(os.path.join(out_dir, split + ".txt"), "wb").write(data)
        write_shard(os.path.join(out_dir, split + ".bin"), data)
    print(f"{len(fortunes)} fortunes from {len(names)} files: train {len(train)} bytes, val {len(val)} bytes -> {out_dir}")


if __name__ == "__main__":
    main()
