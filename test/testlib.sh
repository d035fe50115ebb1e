# testlib.sh: sourced by the test/cli_*.sh scripts (not a test itself:
# run_tests.sh runs only test/cli_*.sh).
# PASS/FAIL lines, the counts, and the final "N passed, N failed" line.
passed=0; failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; failed=$((failed + 1)); }
# check NAME CMD...: passes when CMD succeeds (its output discarded)
check() {
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name"; fi
}
# expect_error NAME PATTERN CMD...: CMD must exit nonzero and print PATTERN on stderr
expect_error() {
    local name=$1 pattern=$2; shift 2
    local err rc
    err=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && grep -qi -- "$pattern" <<<"$err"; then pass "$name"
    else fail "$name" "rc=$rc, stderr: $(head -c 300 <<<"$err")"; fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
