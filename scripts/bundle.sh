#!/usr/bin/env bash
# make bundle: everything a GPU machine without our Debian packages needs to run kiln-server,
# the unit tests and the GPU checks, in build/bundle (carry it; see ../shared/GPU.md).
#   build/bundle/bin      kiln-server, kiln, cuda_shm_client, bench_onnx, cudnn_layouts
#   build/bundle/gpu-checks.sh  tests/gpu/run.sh: run it there as build/bundle/gpu-checks.sh build/bundle
#   build/bundle/tests    the unit test binaries (KILN_TEST_BUILD_DIR=build/bundle finds models)
#   build/bundle/{models,test-models,torch-models,plugins}  what the tests and the server load
#                         (plugins/cuda_fault.so: the GPU fault of the lost-GPU check)
#   build/bundle/lib      every shared library the binaries need, except glibc's and CUDA's
# Run there with: LD_LIBRARY_PATH=$PWD/build/bundle/lib:/usr/local/cuda/lib64
# The folder is over the device's 64 MiB carry limit once OpenBLAS is in it, so the script also
# writes build/bundle.tar.xz: carry that and unpack it there (tar -C build -xJf ...).
set -euo pipefail
cd "$(dirname "$0")/.."
# optional: a sanitizer configuration, e.g. scripts/bundle.sh address,undefined
san=${1:-}
if [ -n "$san" ]; then
    src=build/$(echo "$san" | tr ',' '-'); out=build/bundle-$(echo "$san" | tr ',' '-')
else
    src=build/default; out=build/bundle
fi
make -j"$(nproc)" SAN="$san" BUILD="$src" all "$src/tests/gpu/cuda_shm_client" "$src/bench/bench_onnx" \
    "$src/plugins/cuda_fault.so" "$src/bench/cudnn_layouts"
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/tests"
cp "$src/kiln-server" "$src/kiln" "$src/tests/gpu/cuda_shm_client" "$src/bench/bench_onnx" \
    "$src/bench/cudnn_layouts" "$out/bin/"
cp tests/gpu/run.sh "$out/gpu-checks.sh"
find "$src/tests/unit" -type f -perm -u+x -exec cp {} "$out/tests/" \;
cp -rL "$src/models" "$src/test-models" "$src/torch-models" "$src/plugins" "$out/"
bins=("$out"/bin/* "$out"/tests/*)
ldd "${bins[@]}" 2>/dev/null | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libcudnn*) ;;
        *) cp -L "$lib" "$out/lib/" ;;
    esac
done
tar -C "$(dirname "$out")" -cJf "$out.tar.xz" "$(basename "$out")"
du -sh "$out" "$out.tar.xz"
