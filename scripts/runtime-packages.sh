#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that hold the shared libraries the given binaries load
# (ldd), one per line, sorted: what a runtime image must install. The C library's and CUDA's
# libraries are left out (every base image has the first; the CUDA runtime image, the second).
# A library no package holds is an error (exit 1), so a runtime image is never short of one.
#   scripts/runtime-packages.sh build/default/kiln-server [more binaries...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
missing=0
declare -A pkgs=()
while read -r lib path; do
    case "$lib" in linux-vdso.so*|ld-linux*|*/ld-linux*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*) continue ;; esac
    case "$path" in /usr/local/cuda*|*/cuda/*|*/nvidia/*) continue ;; esac
    if [ "$path" = "not" ]; then
        echo "runtime-packages: $lib is not found on this machine" >&2
        missing=1
        continue
    fi
    real=$(readlink -f "$path")
    pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
    if [ -z "$pkg" ]; then
        echo "runtime-packages: no package holds $path" >&2
        missing=1
        continue
    fi
    pkgs["${pkg%%:*}"]=1
done < <(ldd "$@" | awk '/=>/ {print $1, $3} !/=>/ && /^\t/ {print $1, $1}' | sort -u)
[ "$missing" -eq 0 ] || exit 1
printf '%s\n' "${!pkgs[@]}" | sort
