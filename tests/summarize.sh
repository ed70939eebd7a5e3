#!/usr/bin/env bash
# Prints each configuration's counts and one closing total line from the summary file that
# tests/run_unit.sh appends to. Exits 1 if anything failed or nothing ran.
set -u
file=$1
total_p=0
total_f=0
total_s=0
while read -r config p f s; do
    echo "  $config: $p passed, $f failed, ${s:-0} skipped"
    total_p=$((total_p + p))
    total_f=$((total_f + f))
    total_s=$((total_s + ${s:-0}))
done < "$file"
echo "total: $total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ] && [ "$total_p" -gt 0 ]
