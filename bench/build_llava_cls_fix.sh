#!/usr/bin/env bash
# A second libmtmd with llama.cpp's llava CLS-token fix (llama.cpp issue #25814, PR #25844: the
# llava graph must put the class embedding BEFORE the patch embeddings), next to the peer that
# bench/build_peers.sh built, without touching that peer: the one changed source file is
# patched in a copy and compiled with the peer build's own flags, and libmtmd is linked from the
# peer's other objects plus that one, into $ROOT-clsfix/bin (with links to the peer's libllama
# and libggml*). The peer's build tree and bin/ are only read (their sha256 checked after).
# Usage: bench/build_llava_cls_fix.sh   (after build_peers.sh; the same LANNER_PEERS / VERSION)
# Check: the same recipe on the UNPATCHED file must give the shipped libmtmd byte for byte.
set -euo pipefail

VERSION="${VERSION:-0.3.36}"
PEERS="${LANNER_PEERS:-$HOME/.cache/lanner-peers}"
ROOT="$PEERS/llama.cpp-$VERSION"
SRC="$ROOT/src"
BUILD="$ROOT/build"
FIX="$ROOT-clsfix"
DIR="$BUILD/tools/mtmd"                     # where the peer's mtmd objects and link line live
FLAGS="$DIR/CMakeFiles/mtmd.dir/flags.make"
LINK="$DIR/CMakeFiles/mtmd.dir/link.txt"
OBJ="CMakeFiles/mtmd.dir/models/llava.cpp.o"
for f in "$FLAGS" "$LINK" "$DIR/$OBJ" "$SRC/tools/mtmd/models/llava.cpp"; do
    [[ -f "$f" ]] || { echo "missing $f: run bench/build_peers.sh first" >&2; exit 1; }
done
before="$(cd "$BUILD/bin" && sha256sum $(find . -maxdepth 1 -type f | sort))"

flag() { sed -n "s/^$1 = //p" "$FLAGS"; }
# compile one llava.cpp (arg 1) into an object (arg 2) with the peer's flags ("models.h" from src)
compile() {
    # shellcheck disable=SC2046
    (cd "$DIR" && nice -n 10 /usr/bin/c++ $(flag CXX_DEFINES) $(flag CXX_INCLUDES) \
        -I"$SRC/tools/mtmd/models" $(flag CXX_FLAGS) -o "$2" -c "$1")
}
# link libmtmd (arg 2) from the peer's objects with llava.cpp.o replaced by arg 1
link() {
    local cmd
    cmd="$(sed -e "s#-o \.\./\.\./bin/libmtmd\.so\.[0-9.]*#-o $2#" -e "s#$OBJ#$1#" "$LINK")"
    [[ "$cmd" == *"-o $2"* && "$cmd" == *"$1"* ]] || { echo "unexpected link line in $LINK" >&2; exit 1; }
    (cd "$DIR" && nice -n 10 bash -c "$cmd")
}

mkdir -p "$FIX/src" "$FIX/obj" "$FIX/bin"
lib="$(basename "$(readlink -f "$BUILD/bin/libmtmd.so")")"   # libmtmd.so.X.Y.Z

# 1. the recipe reproduces the shipped library from the unpatched file
compile "$SRC/tools/mtmd/models/llava.cpp" "$FIX/obj/llava-orig.o"
link "$FIX/obj/llava-orig.o" "$FIX/obj/$lib.orig"
if cmp -s "$FIX/obj/$lib.orig" "$BUILD/bin/$lib"; then
    echo "recipe check: the unpatched rebuild equals the shipped $lib"
else
    echo "recipe check: the unpatched rebuild differs from the shipped $lib (see above)" >&2
    exit 1
fi

# 2. the fix: swap the two operands of the class-embedding concat (class token first)
cp "$SRC/tools/mtmd/models/llava.cpp" "$FIX/src/llava.cpp"
old='ggml_concat(ctx0, inp, model.class_embedding, 1)'
new='ggml_concat(ctx0, model.class_embedding, inp, 1)'
[[ "$(grep -cF "$old" "$FIX/src/llava.cpp")" == 1 ]] || { echo "llava.cpp: the concat line is not there once" >&2; exit 1; }
sed -i "s/ggml_concat(ctx0, inp, model\.class_embedding, 1)/$new/" "$FIX/src/llava.cpp"
diff "$SRC/tools/mtmd/models/llava.cpp" "$FIX/src/llava.cpp" || true
compile "$FIX/src/llava.cpp" "$FIX/obj/llava-clsfix.o"
link "$FIX/obj/llava-clsfix.o" "$FIX/bin/$lib"

# 3. bin/: the fixed libmtmd (+ its soname links) and the peer's other libraries
ln -sfn "$lib" "$FIX/bin/libmtmd.so.0"
ln -sfn libmtmd.so.0 "$FIX/bin/libmtmd.so"
for f in "$BUILD"/bin/libllama.so* "$BUILD"/bin/libggml*.so*; do
    ln -sfn "$f" "$FIX/bin/$(basename "$f")"
done
after="$(cd "$BUILD/bin" && sha256sum $(find . -maxdepth 1 -type f | sort))"
[[ "$before" == "$after" ]] || { echo "the peer's bin/ changed!" >&2; exit 1; }
echo "peer bin/ unchanged (sha256); fixed libmtmd in $FIX/bin:"
ls -l "$FIX/bin"
