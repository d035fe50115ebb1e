#!/usr/bin/env python3
"""Prepare the King James Bible as byte-level token shards for training.

Source: Debian's bible-kjv package (`sudo apt-get install bible-kjv`). Its
`bible` program dumps the whole text in one call with the range
"Gen1:1-Rev22:21" (-f off means one verse per line, prefixed by an abbreviated
reference such as "Ge1:1").

Text format (one verse per line, ASCII, '\\n' after every line):
    Genesis 1:1 In the beginning God created the heaven and the earth.
The abbreviated book names are replaced by full names ("1 Samuel", "Song of
Solomon", ...); runs of whitespace inside a verse are collapsed to one space.

Split: the 1189 chapters are numbered 0..1188 in canonical order (Genesis 1 is
0, Revelation 22 is 1188). Chapter index % 20 == 19 goes to val (59 chapters,
about 5%), every other chapter to train. Whole chapters are kept together so no
verse of a val chapter is seen in training.

Tokens: byte level, vocab 256 (each UTF-8 byte is one token; the text is plain
ASCII). Output files in the output directory (default data/kjv):
    train.bin, val.bin  shards: 256 little-endian int32 header
                        [20261123 magic, 1 version, n tokens, 256 vocab, 0...]
                        followed by n little-endian uint16 tokens
    train.txt, val.txt  the same text, for reading

Usage: python3 data_scripts/prepare_kjv.py [out_dir]
"""
import os
import re
import shutil
import struct
import subprocess
import sys

MAGIC, VERSION, VOCAB = 20261123, 1, 256
VAL_EVERY = 20  # chapter index % VAL_EVERY == VAL_EVERY - 1 -> val

# abbreviation printed by `bible` -> full name, in canonical order (66 books)
BOOKS = [
    ("Ge", "Genesis"), ("Exo", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"),
    ("Deu", "Deuteronomy"), ("Josh", "Joshua"), ("Jdgs", "Judges"), ("Ruth", "Ruth"),
    ("1Sm", "1 Samuel"), ("2Sm", "2 Samuel"), ("1Ki", "1 Kings"), ("2Ki", "2 Kings"),
    ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"),
    ("Neh", "Nehemiah"), ("Est", "Esther"), ("Job", "Job"), ("Psa", "Psalms"),
    ("Prv", "Proverbs"), ("Eccl", "Ecclesiastes"), ("SSol", "Song of Solomon"),
    ("Isa", "Isaiah"), ("Jer", "Jeremiah"), ("Lam", "Lamentations"),
    ("Eze", "Ezekiel"), ("Dan", "Daniel"), ("Hos", "Hosea"), ("Joel", "Joel"),
    ("Amos", "Amos"), ("Obad", "Obadiah"), ("Jonah", "Jonah"), ("Mic", "Micah"),
    ("Nahum", "Nahum"), ("Hab", "Habakkuk"), ("Zep", "Zephaniah"), ("Hag", "Haggai"),
    ("Zec", "Zechariah"), ("Mal", "Malachi"), ("Mat", "Matthew"), ("Mark", "Mark"),
    ("Luke", "Luke"), ("John", "John"), ("Acts", "Acts"), ("Rom", "Romans"),
    ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"), ("Gal", "Galatians"),
    ("Eph", "Ephesians"), ("Phi", "Philippians"), ("Col", "Colossians"),
    ("1Th", "1 Thessalonians"), ("2Th", "2 Thessalonians"), ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phmn", "Philemon"),
    ("Heb", "Hebrews"), ("Jas", "James"), ("1Pet", "1 Peter"), ("2Pet", "2 Peter"),
    ("1Jn", "1 John"), ("2Jn", "2 John"), ("3Jn", "3 John"), ("Jude", "Jude"),
    ("Rev", "Revelation"),
]
N_CHAPTERS, N_VERSES = 1189, 31102  # KJV totals, used as a sanity check

VERSE_RE = re.compile(r"^([0-9]?[A-Za-z]+)([0-9]+):([0-9]+) (.*)$")


def dump_bible():
    """Return the raw `bible` dump: one verse per line."""
    exe = shutil.which("bible")
    if exe is None:
        sys.exit("error: the `bible` program was not found.\n"
                 "Install the King James text with:  sudo apt-get install bible-kjv")
    # -f toggles pretty-printing OFF (it is on by default): one verse per line
    res = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        sys.exit("error: `bible` failed (exit %d): %s" % (res.returncode,
                 res.stderr.decode("utf-8", "replace").strip()))
    return res.stdout.decode("utf-8")


def parse_chapters(raw):
    """Parse the dump into a list of chapters, each a list of formatted lines."""
    full = dict(BOOKS)
    book_order = [abbr for abbr, _ in BOOKS]
    chapters, seen_books = [], []
    prev = None  # (book, chapter) of the previous verse
    n_verses = 0
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        m = VERSE_RE.match(line)
        if not m:
            sys.exit("error: unexpected line %d from `bible`: %r" % (lineno, line[:80]))
        abbr, ch, vs, text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if abbr not in full:
            sys.exit("error: unknown book abbreviation %r on line %d" % (abbr, lineno))
        if (abbr, ch) != prev:
            chapters.append([])
            if not seen_books or seen_books[-1] != abbr:
                seen_books.append(abbr)
            prev = (abbr, ch)
        text = " ".join(text.split())  # collapse the few double spaces
        chapters[-1].append("%s %d:%d %s\n" % (full[abbr], ch, vs, text))
        n_verses += 1
    if seen_books != book_order:
        sys.exit("error: books out of order or missing (got %d books)" % len(seen_books))
    if len(chapters) != N_CHAPTERS or n_verses != N_VERSES:
        sys.exit("error: expected %d chapters / %d verses, got %d / %d"
                 % (N_CHAPTERS, N_VERSES, len(chapters), n_verses))
    return chapters


def write_shard(path, data):
    """data: bytes; each byte is a token. Writes atomically via path.tmp."""
    header = struct.pack("<256i", MAGIC, VERSION, len(data), VOCAB, *([0] * 252))
    # uint16 little-endian: byte b -> (b, 0)
    tokens = bytearray(2 * len(data))
    tokens[0::2] = data
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(tokens)
    os.replace(tmp, path)


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    if len(sys.argv) > 2:
        sys.exit("usage: python3 data_scripts/prepare_kjv.py [out_dir]")
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "kjv")
    chapters = parse_chapters(dump_bible())
    train, val = [], []
    for idx, lines in enumerate(chapters):
        (val if idx % VAL_EVERY == VAL_EVERY - 1 else train).append("".join(lines))
    os.makedirs(out_dir, exist_ok=True)
    for name, parts, n_ch in (("train", train, len(train)), ("val", val, len(val))):
        text = "".join(parts)
        data = text.encode("utf-8")
        with open(os.path.join(out_dir, name + ".txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        write_shard(os.path.join(out_dir, name + ".bin"), data)
        print("%-5s %4d chapters %6d verses %9d tokens -> %s"
              % (name, n_ch, text.count("\n"), len(data), os.path.join(out_dir, name + ".bin")))


if __name__ == "__main__":
    main()
