#!/usr/bin/env bash
# bench/ab_onnx.sh: two builds' ONNX backend on the same models, in the same run: build A's
# bench_onnx against build B's (an earlier commit's against this one, say), in A B B A order so
# that a drift of the machine's speed weighs on both alike. Prints one line per run and model
# and batch (steps after load's rewrites, p50 latency, throughput), then B's throughput over A's.
#
#   bench/ab_onnx.sh A/bench_onnx B/bench_onnx MODEL_DIR... [-- BENCH_ONNX_ARGS...]
#
# BENCH_ONNX_ARGS default to: --batch 1,8 --runs 400 --seconds 1 --instances 1 (the CPU, one
# BLAS thread); pass --gpu 0 --device-io and the like for a GPU.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,12p' "$0"; exit 2; }
a=$1 b=$2
shift 2
models=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do models+=("$1"); shift; done
[ $# -gt 0 ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--batch 1,8 --runs 400 --seconds 1 --instances 1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for m in "${models[@]}"; do
    for who in A B B A; do
        bin=$a
        [ "$who" = B ] && bin=$b
        "$bin" "$m" "${args[@]}" 2>/dev/null | sed "s/^/$who /" | tee -a "$out" |
            /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    who, j = line.split(" ", 1)
    j = json.loads(j)
    print(who, j["model"], "batch", j["batch"], "steps", j["steps"], "p50_ms", j["p50_ms"],
          "items/s", round(j["items_per_s"]))'
    done
done
/usr/bin/python3 - "$out" <<'PY'
import collections, json, sys
tp = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, j = line.split(" ", 1)
    j = json.loads(j)
    tp[(j["model"], j["batch"], who)].append(j["items_per_s"])
for (model, batch, who) in sorted(k for k in tp if k[2] == "A"):
    a, b = tp[(model, batch, "A")], tp.get((model, batch, "B"), [])
    if b:
        print(f"{model} batch {batch}: B/A throughput {sum(b) / len(b) / (sum(a) / len(a)):.2f}")
PY
