#!/usr/bin/env bash
# Installs the Debian packages Kiln needs. Idempotent: installs only what is missing.
# Runs apt-get as root, or through sudo when not root.
#   scripts/deps.sh           what building, running and testing need
#   scripts/deps.sh --bench   also PyTorch and torchvision, for bench/onnx_vs_torch.py
#                             (and for remaking tests/fixtures/torch)
set -euo pipefail

PKGS=(
    # build
    gcc make pkg-config git
    # libraries
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    # descriptor.proto (libprotobuf-dev) and compiler/plugin.proto, for protoc-gen-kiln-c
    libprotobuf-dev libprotoc-dev
    libseccomp-dev libdlpack-dev libcmocka-dev libopenblas-dev
    # the standard health proto (grpc.health.v1)
    grpc-proto
    # TLS tests make their certificates with openssl
    openssl
    # tests: an independent Python client, stubs generated at test time
    python3-grpcio python3-numpy python3-protobuf protobuf-compiler-grpc
    # tooling: fuzzing and sanitizer runtimes, formatting, compile_commands.json
    clang libclang-rt-14-dev clang-format bear
)
if [ "${1:-}" = "--bench" ]; then
    PKGS+=(python3-torch python3-torchvision)
fi

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
