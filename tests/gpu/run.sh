#!/usr/bin/env bash
# tests/gpu/run.sh: the GPU checks, on a machine with an NVIDIA GPU, from the bundle
# (make bundle; docs/gpu.md). Prints one "ok"/"FAIL" line per check; exits 1 on a failure.
#
#   tests/gpu/run.sh [BUNDLE_DIR]        (default build/bundle)
#
# 1. The backend's GPU unit tests (tests/unit/backends/test_onnx_gpu.c): every fixture against
#    the CPU path (FP32 and TF32), CUDA graphs on and off, device inputs and outputs, device
#    memory accounting, sandboxed execution.
# 2. kiln-server on a repository of GPU models (instance_group KIND_GPU):
#    - the load logs say where each model runs;
#    - CUDA shared memory end to end from a client process (tests/gpu/cuda_shm_client.c),
#      input and output of an ONNX model in the client's device buffer;
#    - the misbehaving plugin is still blocked by the sandbox while a GPU model serves load
#      (kiln perf in the background), and the load finishes without errors;
#    - /metrics reports the models' device memory and the GPU;
#    - last, a lost GPU: a plugin's kernel stores through an illegal address (cuda_fault.cu),
#      which leaves the GPU's CUDA context unusable for the process. That request fails with
#      the CUDA error, the ONNX models on the GPU then fail with it too and stop serving, the
#      server reports NOT_SERVING (health and ServerLive/Ready, so that an orchestrator restarts
#      it), /metrics counts the lost GPU, and the server stays up and answers.
set -u
B=$(cd "${1:-build/bundle}" && pwd)
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
failures=0
check() { # check OK WHAT [DETAIL]
    if [ "$1" = 0 ]; then echo "ok    $2"; else echo "FAIL  $2${3:+: $3}"; failures=$((failures + 1)); fi
}

# every step is bounded; KILN_GPU_LOGS=DIR keeps the logs there
logs=${KILN_GPU_LOGS:-$(mktemp -d)}
KILN_TEST_BUILD_DIR=$B timeout 300 "$B/tests/test_onnx_gpu" >"$logs/unit.log" 2>&1
rc=$?
grep -E '^\[ *(OK|FAILED|SKIPPED|ERROR|LINE) |syscall' "$logs/unit.log"
check $rc "GPU unit tests (test_onnx_gpu)"

work=$(mktemp -d)
trap 'kill $srv 2>/dev/null; wait 2>/dev/null; cp "$work/log" "$logs/server.log"; rm -rf "$work"' EXIT
repo=$work/repo
mkdir -p "$repo"
gpu_model() { # gpu_model SRC NAME COUNT
    cp -rL "$1" "$repo/$2"
    sed -i "s/^name: .*/name: \"$2\"/" "$repo/$2/config.pbtxt"
    echo "instance_group [ { kind: KIND_GPU count: $3 } ]" >>"$repo/$2/config.pbtxt"
}
gpu_model "$B/models/mlp_onnx" mlp_gpu 1
gpu_model "$B/torch-models/resnet" resnet_gpu 2
cp -rL "$B/test-models/misbehave" "$B/models/identity_fp32" "$repo/"
mkdir -p "$repo/cuda_fault/1" && cp "$B/plugins/cuda_fault.so" "$repo/cuda_fault/1/model.so"
cat >"$repo/cuda_fault/config.pbtxt" <<'CFG'
name: "cuda_fault"
backend: "plugin"
max_batch_size: 0
input [ { name: "MODE" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
CFG

"$B/bin/kiln-server" --address=127.0.0.1:0 --model-repository="$repo" \
    --port-file="$work/port" --metrics-address=127.0.0.1:0 --metrics-port-file="$work/mport" \
    --exec-threads=4 >"$work/log" 2>&1 &
srv=$!
for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port" 2>/dev/null)
check $([ -n "$port" ]; echo $?) "kiln-server starts with GPU models" "$(tail -5 "$work/log")"
[ -n "$port" ] || exit 1
url=127.0.0.1:$port
grep '"msg":"on GPU 0' "$work/log" | grep -q '"model":"resnet_gpu"' 
check $? "the load log says resnet_gpu runs on GPU 0"

timeout 120 "$B/bin/cuda_shm_client" "$port" mlp_gpu
check $? "CUDA shared memory end to end (cuda_shm_client)"

timeout 60 "$B/bin/kiln" perf resnet_gpu --url "$url" --concurrency 8 --duration 4s --warmup 1s --json \
    >"$work/perf.json" 2>"$work/perf.err" &
perf=$!
sleep 1.5
out=$(timeout 60 "$B/bin/kiln" infer misbehave --url "$url" --input 'MODE=json:[15]' --datatype INT32 2>&1)
rc=$?
echo "$out" | grep -q "blocked by the sandbox"
check $([ $rc != 0 ] && echo $? || echo 1) "the misbehaving plugin is blocked while a GPU model serves" "$out"
wait $perf
rc=$?
errors=$(/usr/bin/env python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(l["errors"] for l in d["levels"]), sum(l["requests"] for l in d["levels"]))' "$work/perf.json" 2>/dev/null)
check $([ $rc = 0 ] && [ "${errors%% *}" = 0 ]; echo $?) "resnet_gpu under load: no errors (errors, requests: $errors)" "$(cat "$work/perf.err")"
cat "$work/perf.json"

mport=$(cat "$work/mport")
metrics=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$mport/metrics', timeout=30).read().decode())")
dev=$(echo "$metrics" | grep '^kiln_model_device_memory_bytes{model="resnet_gpu"' | awk '{print $2}')
check $(python3 -c "import sys; sys.exit(0 if float('${dev:-0}') > 0 else 1)"; echo $?) \
    "/metrics: resnet_gpu holds device memory ($dev bytes)"
echo "$metrics" | grep -q '^kiln_gpu_memory_used_bytes'
check $? "/metrics: GPU memory reported"
echo "$metrics" | grep -E '^kiln_(registry_device_bytes|gpu_utilization_ratio)' | head -3

# the lost GPU (last: nothing runs on this GPU in this server afterwards)
row='INPUT=json:[[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]'
timeout 60 "$B/bin/kiln" infer mlp_gpu --url "$url" --input "$row" --datatype FP32 >/dev/null
check $? "mlp_gpu answers before the fault"
out=$(timeout 60 "$B/bin/kiln" infer cuda_fault --url "$url" --input 'MODE=json:[1]' --datatype INT32 2>&1)
rc=$?
echo "$out" | grep -q "illegal memory access"
check $([ $rc != 0 ] && echo $? || echo 1) "a CUDA fault in a plugin fails its request with the CUDA error" "$out"
out=$(timeout 60 "$B/bin/kiln" infer mlp_gpu --url "$url" --input "$row" --datatype FP32 --retries 0 2>&1)
rc=$?
echo "$out" | grep -q "illegal memory access"
check $([ $rc != 0 ] && echo $? || echo 1) "then mlp_gpu fails with the CUDA error" "$out"
echo "$out"
out=$(timeout 60 "$B/bin/kiln" metadata resnet_gpu --url "$url" --retries 0 2>&1)
echo "$out" | grep -q "GPU 0 is unusable until the server restarts"
check $? "resnet_gpu, on the same GPU, stops serving with the reason" "$out"
kill -0 $srv 2>/dev/null
check $? "kiln-server is still running"
out=$(timeout 60 "$B/bin/kiln" health --url "$url" --retries 0 2>&1)
rc=$?
check $([ $rc = 3 ]; echo $?) "kiln health: not live, not ready (exit $rc)" "$out"
echo "$out"
out=$(timeout 60 "$B/bin/kiln" models --url "$url" 2>&1)
echo "$out" | grep mlp_gpu | grep -q "UNAVAILABLE.*GPU 0 is unusable"
check $? "kiln models: mlp_gpu UNAVAILABLE, naming the lost GPU" "$out"
echo "$out" | grep -E "identity_fp32" | grep -q READY
check $? "kiln models: the CPU model identity_fp32 is still READY" "$out"
metrics=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$mport/metrics', timeout=30).read().decode())")
echo "$metrics" | grep -q '^kiln_registry_lost_gpus 1$'
check $? "/metrics: kiln_registry_lost_gpus 1"

grep -E 'GPU|graph|sandbox' "$work/log" | head -20
echo "GPU checks: $failures failed"
[ $failures = 0 ]
