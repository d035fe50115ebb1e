"""What the study scripts (arch_study, lora_study, vit_study, vlm_study) share: the tables they
write and the plotting library, which may be missing (python3-matplotlib)."""
import csv


def write_csv(path, rows):
    """rows: dicts with the same keys; the first row's keys, in order, are the columns"""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def write_markdown(path, lines):
    """the lines as one markdown file, also printed"""
    md = "\n".join(lines) + "\n"
    open(path, "w").write(md)
    print(md)


def pyplot_or_none():
    """matplotlib's pyplot on the Agg backend (files, no display), or None with a note when it is missing"""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("(matplotlib missing: no plot; apt-get install python3-matplotlib)")
        return None
