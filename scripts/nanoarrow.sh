#!/usr/bin/env bash
# Provide nanoarrow with its IPC extension (static, position-independent:
# linked into libsluice, nothing to carry at run time) in a prefix outside
# the repository, and print that prefix as the last line of stdout.
#
# $SLUICE_NANOARROW_PREFIX if set; otherwise the C library carried by the
# pinned nanoarrow sdist (scripts/versions.sh) is built into
#   ${SLUICE_CACHE:-~/.cache/sluice}/nanoarrow/<version>/prefix
# with the zstd and lz4 codecs of compressed record batches (pyarrow's
# Feather default is lz4), from the system's libzstd and liblz4, and two
# changes of ours: nanoarrow-dictionary-codec.patch (0.9.0 decodes a
# compressed dictionary batch as if it were not compressed; pandas'
# categoricals in a Feather file are such batches) and
# nanoarrow-view-types.patch (0.9.0's IPC reader refuses Utf8View and
# BinaryView, which polars writes by default; the patch reads their variadic
# buffers, leaving the check of each view's buffer and bounds to sluice).
# A complete prefix (its stamp naming this build) is reused as is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

say() { echo "[nanoarrow] $*" >&2; }
die() { echo "[nanoarrow] error: $*" >&2; exit 1; }

has_prefix() {
    [ -f "$1/include/nanoarrow/nanoarrow_ipc.h" ] && [ -f "$1/lib/libnanoarrow_ipc_static.a" ] &&
    [ -f "$1/lib/libnanoarrow_static.a" ] && [ -f "$1/lib/libflatccrt.a" ] &&
    [ -f "$1/include/flatcc/flatcc_flatbuffers.h" ]
}

if [ -n "${SLUICE_NANOARROW_PREFIX:-}" ]; then
    has_prefix "$SLUICE_NANOARROW_PREFIX" ||
        die "SLUICE_NANOARROW_PREFIX=$SLUICE_NANOARROW_PREFIX lacks include/nanoarrow/nanoarrow_ipc.h or lib/lib{nanoarrow_static,nanoarrow_ipc_static,flatccrt}.a"
    echo "$SLUICE_NANOARROW_PREFIX"; exit 0
fi

root=${SLUICE_CACHE:-$HOME/.cache/sluice}/nanoarrow/$NANOARROW_VERSION
prefix=$root/prefix
stamp=$prefix/.sluice-complete
# The patches' own hash: a changed patch rebuilds the prefix.
patches=$(cat "$here"/nanoarrow-dictionary-codec.patch "$here"/nanoarrow-view-types.patch | sha256sum | cut -c1-16)
build_id="nanoarrow $NANOARROW_VERSION ipc zstd lz4 patches $patches"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$build_id" ] && has_prefix "$prefix"; then
    say "reusing cached build $prefix"
    echo "$prefix"; exit 0
fi

mkdir -p "$root"
sdist=$root/nanoarrow-$NANOARROW_VERSION.tar.gz
if [ ! -f "$sdist" ] || ! echo "$NANOARROW_SHA256  $sdist" | sha256sum -c --status; then
    say "downloading the nanoarrow==$NANOARROW_VERSION source distribution from PyPI"
    curl -fsSL --retry 3 -o "$sdist.part" "$NANOARROW_URL" ||
        die "downloading $NANOARROW_URL failed: check that PyPI is reachable"
    mv "$sdist.part" "$sdist"
fi
echo "$NANOARROW_SHA256  $sdist" | sha256sum -c --status ||
    die "sha256 of $sdist is $(sha256sum "$sdist" | cut -d' ' -f1), expected $NANOARROW_SHA256 (scripts/versions.sh)"

src=$root/src
rm -rf "$src" "$root/build" "$prefix"
mkdir -p "$src"
tar -xzf "$sdist" -C "$src" --strip-components=1
na=$src/subprojects/arrow-nanoarrow
flatcc=$(ls -d "$src"/subprojects/flatcc-*/ 2>/dev/null | head -n 1)
[ -f "$na/CMakeLists.txt" ] && [ -n "$flatcc" ] ||
    die "the sdist has no subprojects/arrow-nanoarrow or flatcc: pin another nanoarrow version"
# The sdist leaves out two things its CMake build expects: flatcc where
# the vendored build looks (thirdparty/flatcc), and the package config
# template (an installed CMake package is not used here).
mkdir -p "$na/thirdparty" "$na/cmake"
ln -sfn "$flatcc" "$na/thirdparty/flatcc"
[ -f "$na/cmake/config.cmake.in" ] || echo '@PACKAGE_INIT@' >"$na/cmake/config.cmake.in"
patch -s -d "$na" -p1 <"$here/nanoarrow-dictionary-codec.patch" ||
    die "scripts/nanoarrow-dictionary-codec.patch does not apply to nanoarrow $NANOARROW_VERSION: see whether that version still needs it"
patch -s -d "$na" -p1 <"$here/nanoarrow-view-types.patch" ||
    die "scripts/nanoarrow-view-types.patch does not apply to nanoarrow $NANOARROW_VERSION: see whether that version reads view types itself"

say "building nanoarrow $NANOARROW_VERSION with IPC into $prefix"
cmake -S "$na" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DNANOARROW_IPC=ON \
    -DNANOARROW_IPC_WITH_ZSTD=ON -DNANOARROW_IPC_WITH_LZ4=ON \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DNANOARROW_INSTALL_SHARED=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix" >"$root/configure.log" 2>&1 ||
    die "cmake configure failed; see $root/configure.log"
cmake --build "$root/build" -j "${SLUICE_JOBS:-$(nproc)}" --target nanoarrow_static nanoarrow_ipc_static flatccrt \
    >"$root/build.log" 2>&1 || die "build failed; see $root/build.log"
cmake --install "$root/build" >"$root/install.log" 2>&1 || die "install failed; see $root/install.log"
# flatcc's reader headers too: sluice checks a message's flatbuffer with
# them before nanoarrow decodes it (io/source_arrow.c).
cp -r "$flatcc/include/flatcc" "$prefix/include/"
has_prefix "$prefix" || die "the install in $prefix is incomplete; see $root/install.log"
echo "$build_id" >"$stamp"
echo "$prefix"
