#!/usr/bin/env bash
# Runs every build/dev_* binary (each runs all its versions: validation + benchmark) and prints one
# combined table. Works with whatever subset of binaries exists (build them with `make dev`).
#   bash dev/run_all.sh                 all binaries
#   bash dev/run_all.sh scan conv1d     only binaries whose name contains one of the words
# Full output of each binary (with FAIL details on stderr) goes to build/dev_logs/<name>.log.
# Exit status: nonzero if any binary failed (validation failure, crash) or none was found.
cd "$(dirname "$0")/.." || exit 1
shopt -s nullglob

bins=()
for b in build/dev_*; do
    [[ -f "$b" && -x "$b" ]] || continue
    if (($# > 0)); then
        keep=0
        for w in "$@"; do [[ "$(basename "$b")" == *"$w"* ]] && keep=1; done
        ((keep)) || continue
    fi
    bins+=("$b")
done
if ((${#bins[@]} == 0)); then
    echo "run_all.sh: no build/dev_* binaries found (run 'make dev' first)" >&2
    exit 1
fi

mkdir -p build/dev_logs
header=""
rows=()
failed=()
for b in "${bins[@]}"; do
    name=$(basename "$b")
    log="build/dev_logs/$name.log"
    echo ">>> $b" >&2
    "$b" >"$log.out" 2>"$log.err"
    rc=$?
    cat "$log.out" "$log.err" >"$log"
    # table lines have exactly 8 ' | '-separated fields; the header starts with "family"
    while IFS= read -r line; do
        nf=$(awk -F' [|] ' '{print NF}' <<<"$line")
        [[ "$nf" == 8 ]] || continue
        if [[ "$line" == family* ]]; then
            [[ -z "$header" ]] && header="$line"
        else
            rows+=("$line")
        fi
    done <"$log.out"
    rm -f "$log.out" "$log.err"
    if ((rc != 0)); then
        failed+=("$name (exit $rc)")
        grep -E "^ *FAIL|error|CUDA" "$log" | head -20 >&2
    fi
done

echo
if [[ -n "$header" ]]; then
    echo "$header"
    printf '%*s\n' "${#header}" '' | tr ' ' '-'
fi
for r in "${rows[@]}"; do echo "$r"; done
echo
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}  (see build/dev_logs/)"
    exit 1
fi
echo "all ${#bins[@]} binaries passed validation"
