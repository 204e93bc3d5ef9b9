#!/usr/bin/env bash
# Build the llama.cpp peers (llama-server, llama-bench, libmtmd + llama-mtmd-cli) from the
# llama.cpp that llama-cpp-python's PyPI sdist vendors, into a cache folder outside the repo.
# Usage: bench/build_peers.sh [--with-llava-cls-fix] [SDIST.tar.gz]
#   (default sdist: pip download of llama-cpp-python==$VERSION); --with-llava-cls-fix also makes
#   a second libmtmd with llama.cpp's llava CLS-first fix in $LANNER_PEERS/llama.cpp-$VERSION-clsfix
#   (bench/build_llava_cls_fix.sh; the peer itself is left as built).
# Env: LANNER_PEERS (default ~/.cache/lanner-peers), JOBS (default 2), VERSION (default 0.3.36),
# NATIVE=1: a second build for this CPU (GGML_NATIVE=ON: AVX-512/VNNI where it has them) of
# llama-server and llama-bench only, in build-native/ with bin-native/ next to bin/.
# CPU options: the same ISA as lanner's ggml wheel (AVX/AVX2/FMA/F16C/BMI2; no AVX-512, no AMX,
# GGML_NATIVE=OFF); llama.cpp's own defaults otherwise (llamafile sgemm, OpenMP, CPU repack on).
set -euo pipefail

CLS_FIX=0
if [[ "${1:-}" == "--with-llava-cls-fix" ]]; then
    CLS_FIX=1
    shift
fi

VERSION="${VERSION:-0.3.36}"
PEERS="${LANNER_PEERS:-$HOME/.cache/lanner-peers}"
JOBS="${JOBS:-2}"
ROOT="$PEERS/llama.cpp-$VERSION"
SRC="$ROOT/src"
BUILD="$ROOT/build"

# 1. the sdist (given, or downloaded with pip into the cache)
mkdir -p "$PEERS"
SDIST="${1:-}"
if [[ -z "$SDIST" ]]; then
    SDIST="$PEERS/llama_cpp_python-$VERSION.tar.gz"
    if [[ ! -f "$SDIST" ]]; then
        # only this package from source; --no-build-isolation: its metadata step uses this
        # interpreter's scikit-build-core instead of building every build dependency (cmake too) from source
        python3 -m pip download --no-deps --no-binary llama-cpp-python --no-build-isolation -d "$PEERS" "llama-cpp-python==$VERSION"
    fi
fi

# 2. its vendored llama.cpp, unpacked once
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
    tmp="$(mktemp -d)"
    tar -xzf "$SDIST" -C "$tmp"
    mkdir -p "$ROOT"
    rm -rf "$SRC"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$SRC"
    rm -rf "$tmp"
fi

# 3. configure: shared libraries (libmtmd is loaded by other programs), no network, no tests
ISA=(-DGGML_NATIVE=OFF
     -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
     -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
     -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
TARGETS=(llama-server llama-bench mtmd llama-mtmd-cli)
BIN="$ROOT/bin"
if [[ "${NATIVE:-0}" == 1 ]]; then
    BUILD="$ROOT/build-native"
    ISA=(-DGGML_NATIVE=ON)
    TARGETS=(llama-server llama-bench)
    BIN="$ROOT/bin-native"
fi
cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    "${ISA[@]}" \
    >"$ROOT/configure$([[ "${NATIVE:-0}" == 1 ]] && echo -native).log"

# 4. build only what the benches and the vision work use
nice -n 10 cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"

# 5. a stable layout: bin/ (programs + shared libraries), include/ (llama.h, mtmd*.h, ggml*.h)
ln -sfn "$BUILD/bin" "$BIN"
if [[ "${NATIVE:-0}" == 1 ]]; then
    echo "native peers in $BIN:"
    ls "$BIN"
    exit 0
fi
mkdir -p "$ROOT/include"
cp -f "$SRC"/include/llama*.h "$SRC"/tools/mtmd/mtmd.h "$SRC"/tools/mtmd/mtmd-helper.h \
    "$SRC"/ggml/include/*.h "$ROOT/include/"
ln -sfn "$ROOT" "$PEERS/llama.cpp"
echo "peers in $ROOT/bin:"
ls "$ROOT/bin"

# 6. optionally, the llava CLS-first libmtmd next to it (tests/reference/vision_llama_cpp.md)
if [[ "$CLS_FIX" == 1 ]]; then
    VERSION="$VERSION" LANNER_PEERS="$PEERS" "$(dirname "$0")/build_llava_cls_fix.sh"
fi
