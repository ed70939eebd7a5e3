#!/usr/bin/env bash
# Installs the Debian packages Kiln needs. Idempotent: installs only what is missing.
# Runs apt-get as root, or through sudo when not root.
#   scripts/deps.sh           what building, running and testing need
#   scripts/deps.sh --build   what building needs only (the container's build stage)
#   scripts/deps.sh --bench   also PyTorch and torchvision, for bench/onnx_vs_torch.py
#                             (and for remaking tests/fixtures/torch)
set -euo pipefail

# what building kiln-server needs (the container's build stage installs only these)
BUILD_PKGS=(
    gcc make pkg-config git
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    # descriptor.proto (libprotobuf-dev) and compiler/plugin.proto, for protoc-gen-kiln-c
    libprotobuf-dev libprotoc-dev
    libseccomp-dev libdlpack-dev libopenblas-dev libmicrohttpd-dev
    # the standard health proto (grpc.health.v1)
    grpc-proto
)
# what the tests and the tooling need besides
TEST_PKGS=(
    libcmocka-dev
    # TLS tests make their certificates with openssl
    openssl curl
    # tests: an independent Python client, stubs generated at test time
    python3-grpcio python3-numpy python3-protobuf protobuf-compiler-grpc python3-prometheus-client
    # tooling: fuzzing and sanitizer runtimes, formatting, compile_commands.json
    clang libclang-rt-14-dev clang-format bear
    # the Helm chart test renders with Go templates + sprig; PyYAML reads what they make
    golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev python3-yaml
)
case "${1:-}" in
    "") PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
    --build) PKGS=("${BUILD_PKGS[@]}") ;;
    --bench) PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" python3-torch python3-torchvision) ;;
    *) echo "usage: $0 [--build | --bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PKGS[@]} packages present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "deps: missing ${missing[*]}; run 'make deps' as root" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: installed ${#missing[@]} packages"
