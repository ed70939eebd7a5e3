#!/usr/bin/env bash
# Module-boundary rules from STYLE.md that grep can see. Prints offenders; exits 1 if any.
set -u
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files '*.c' '*.h'); do
    case "$f" in server/*|client/*|proto/*|tests/*|bench/*|tools/protoc-gen-kiln-c/*) ;; *)
        if grep -nE '#include *<(grpc/|protobuf-c/)' "$f"; then
            echo "$f: gRPC/protobuf-c header outside server/, client/, proto/ and the generator"; bad=1; fi ;;
    esac
    case "$f" in *.c)
        if grep -nE '^\s*#\s*if(def)?\s.*(CUDA|__CUDACC__)' "$f"; then
            echo "$f: CUDA #if in a .c file (use a *_none.c twin)"; bad=1; fi ;;
    esac
    case "$f" in client/*)  # the client stands apart: common/ and generated code only
        if grep -nE '#include *"(tensor|registry|sandbox|backends|model_worker|server)/' "$f"; then
            echo "$f: client/ includes a server-side module (it shares only common/ and proto/)"
            bad=1; fi ;;
    esac
    case "$f" in tests/gpu/*) ;; *)  # GPU test clients talk to CUDA directly
        if grep -nE '#include *<(cuda|cudnn|cublas)' "$f"; then
            echo "$f: CUDA header outside .cu files"; bad=1; fi ;;
    esac
done
[ $bad -eq 0 ] && echo "check: module boundaries ok"
exit $bad
