#!/usr/bin/env bash
# Prints each configuration's counts and one closing total line from the summary file that
# tests/run_unit.sh appends to. Exits 1 if anything failed or nothing ran.
set -u
file=$1
total_p=0
total_f=0
while read -r config p f; do
    echo "  $config: $p passed, $f failed"
    total_p=$((total_p + p))
    total_f=$((total_f + f))
done < "$file"
echo "total: $total_p passed, $total_f failed"
[ "$total_f" -eq 0 ] && [ "$total_p" -gt 0 ]
