#!/usr/bin/env bash
# Integration tests: real kiln-server processes on 127.0.0.1 with ephemeral ports, driven by
# Debian's python3-grpcio with stubs generated now from our .proto files.
# Usage: tests/integration/run.sh BUILD_DIR   (appends counts to $KILN_TEST_SUMMARY if set)
set -u
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
py=$build/py
rm -rf "$py" && mkdir -p "$py"
protoc -I"$root" --python_out="$py" --grpc_out="$py" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
    proto/model_config.proto proto/grpc_service.proto || exit 1
protoc -I"$root" --python_out="$py" proto/onnx.proto || exit 1
# health as a top-level module (a grpc/ folder would shadow the grpc package)
protoc -I/usr/share/grpc-proto/grpc/health/v1 --python_out="$py" --grpc_out="$py" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin health.proto || exit 1
# every kiln-server a test starts serves its metrics on a loopback port it picks
export KILN_METRICS_ADDRESS=127.0.0.1:0
out=$(mktemp)
KILN_BUILD="$build" KILN_PY="$py" PYTHONPATH="$py:$root/tests/integration:$root/tests/fixtures/onnx" \
    /usr/bin/python3 -m unittest discover -s "$root/tests/integration" -p 'test_*.py' -v \
    2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' "$out" | tail -n 1)
failed=$(sed -n 's/^FAILED (.*failures=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
errors=$(sed -n 's/^FAILED (.*errors=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
skipped=$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
rm -f "$out"
ran=${ran:-0}; bad=$(( ${failed:-0} + ${errors:-0} )); skipped=${skipped:-0}
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
passed=$(( ran - bad - skipped ))
echo "integration: $passed passed, $bad failed, $skipped skipped"
if [ -n "${KILN_TEST_SUMMARY:-}" ]; then
    echo "$build/integration $passed $bad $skipped" >> "$KILN_TEST_SUMMARY"
fi
[ "$rc" -eq 0 ]
