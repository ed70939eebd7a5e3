#!/usr/bin/env bash
# Runs cmocka test binaries, prints each one's output, and ends with one summary line:
# "unit: N passed, N failed" counting test cases across all binaries.
set -u
passed=0
failed=0
skipped=0
bad_bins=()
for bin in "$@"; do
    out=$("$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' | tail -n 1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test(s), listed below:/\1/p' | tail -n 1)
    skipped=$((skipped + ${s:-0}))
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" -ne 0 ] || [ -z "$p" ]; then
        bad_bins+=("$bin (exit $rc)")
        [ -z "$f" ] && failed=$((failed + 1))
    fi
done
if [ ${#bad_bins[@]} -gt 0 ]; then
    echo "failing binaries: ${bad_bins[*]}"
fi
echo "unit: $passed passed, $failed failed, $skipped skipped"
if [ -n "${KILN_TEST_SUMMARY:-}" ]; then
    echo "${KILN_TEST_CONFIG:-unit} $passed $failed $skipped" >> "$KILN_TEST_SUMMARY"
fi
[ "$failed" -eq 0 ] && [ ${#bad_bins[@]} -eq 0 ]
