#!/usr/bin/env bash
# Build, on this CPU machine, what bench/gpu/run.sh needs on a GPU host:
#
#   build-gpu/payload-<flavor>/bundle.tar.xz  bin/sluice and lib/: every
#                                             library sluice loads (llama.cpp's
#                                             included), except glibc,
#                                             libstdc++/libgcc_s and the CUDA
#                                             driver and toolkit (the GPU host's)
#                              gguf-py/       llama.cpp's gguf package (the
#                                             model generator needs it)
#                              MANIFEST       what was packed, from which commit
#
# PACK_FLAVOR=cuda (default): llama.cpp built with CUDA by scripts/llama-cpp.sh
#   (SLUICE_LLAMA_CUDA=1, SLUICE_CUDA_ARCHS default 90-real: H100/H200 machine
#   code without PTX; with PTX the payload passed the 64 MiB), cached in
#   ~/.cache/sluice/llama.cpp/<version>-cuda beside the CPU build. The first
#   time that build takes about 45 minutes on 2 cores: start it early.
# PACK_FLAVOR=cpu: the cached CPU build, packed the same way, to test the whole
#   path on this machine (CPU_SMOKE=1 bash bench/gpu/run.sh; bench/gpu/README.md).
#   The CPU build is compiled for this machine's CPU (GGML_NATIVE): do not
#   carry that payload elsewhere.
#
# sluice is built in build-gpu/build-<flavor> without a run path, so it finds
# its libraries only where run.sh points LD_LIBRARY_PATH (the unpacked lib/).
# The payload and the working tree must stay under 64 MiB, what the device
# tool carries (about 3 MB of it is the tree): ICU's 31 MB
# data table (reached through libxml2's encoding conversion, which sluice never
# uses) is replaced by a stub, and everything is stripped.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
say() { echo "[gpu-pack] $*" >&2; }
die() { echo "[gpu-pack] error: $*" >&2; exit 1; }

flavor=${PACK_FLAVOR:-cuda}
case $flavor in
cpu | cuda) ;;
*) die "PACK_FLAVOR=$flavor: use cuda (for a GPU host) or cpu (a test on this machine)" ;;
esac
out=${PACK_OUT:-build-gpu/payload-$flavor}
bdir=build-gpu/build-$flavor
# The device tool carries at most 64 MiB: the working tree (tracked and
# untracked, not ignored, files) and the payload together.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
limit=$((64 * 1024 * 1024 - ${tree:-0} - 1024 * 1024))

# 1. llama.cpp, through the project's own script (never SLUICE_LLAMA_PREFIX:
#    that would pack whatever build the caller points at)
if [ "$flavor" = cuda ]; then
    command -v nvcc >/dev/null || [ ! -x /usr/local/cuda/bin/nvcc ] || PATH=/usr/local/cuda/bin:$PATH
    prefix=$(env -u SLUICE_LLAMA_PREFIX SLUICE_LLAMA_CUDA=1 SLUICE_CUDA_ARCHS="${SLUICE_CUDA_ARCHS:-90-real}" \
        bash scripts/llama-cpp.sh | tail -n 1) || die "the CUDA llama.cpp build failed (see above)"
    # libggml-cuda needs the driver's libcuda.so.1, which exists only on the GPU host
    link_flags="-Wl,-rpath-link,$prefix/lib -Wl,--allow-shlib-undefined"
else
    prefix=$(env -u SLUICE_LLAMA_PREFIX SLUICE_LLAMA_CUDA=0 bash scripts/llama-cpp.sh | tail -n 1) ||
        die "the CPU llama.cpp build failed (see above)"
    link_flags="-Wl,-rpath-link,$prefix/lib"
fi
llama_root=$(dirname "$prefix")
[ -d "$llama_root/src/gguf-py/gguf" ] || die "$llama_root/src/gguf-py is missing (scripts/llama-cpp.sh unpacks it)"

# 2. sluice against it, with no run path
say "building sluice ($flavor) in $bdir"
# Without FFmpeg: it and its codecs (x265, codec2, SVT-AV1, ...) are ~27 MB
# of xz more than the 64 MiB the device tool carries has room for; the GPU
# check reads images only.
cmake -S . -B "$bdir" -DSLUICE_LLAMA_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_SKIP_RPATH=ON -DCMAKE_EXE_LINKER_FLAGS="$link_flags" -DSLUICE_VIDEO=OFF >/dev/null
cmake --build "$bdir" -j "${JOBS:-$(nproc)}" --target sluice-cli >/dev/null
readelf -d "$bdir/sluice" | grep -qE 'RPATH|RUNPATH' && die "$bdir/sluice has a run path; it must use run.sh's LD_LIBRARY_PATH"

# 3. stage bin/ and lib/
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$bdir/sluice" "$stage/bin/"
# The host provides glibc, libstdc++/libgcc_s and CUDA (driver, runtime,
# cuBLAS, NVML); a copy of those would clash with its driver or its own C++.
host_libs='/(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libgcc_s|libstdc\+\+|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnvidia[^/]*|libnvrtc[^/]*)\.so'
missing=$(LD_LIBRARY_PATH=$prefix/lib ldd "$bdir/sluice" | awk '/not found/ {print $1}' |
    grep -vE '^(libcuda|libcudart|libcublas|libcublasLt|libnvidia)' || true)
[ -z "$missing" ] || die "libraries of $bdir/sluice not found here: $missing"
LD_LIBRARY_PATH=$prefix/lib ldd "$bdir/sluice" | awk '/=> \// {print $3}' | sort -u |
    grep -vE "$host_libs" | while read -r lib; do
    cp -L "$lib" "$stage/lib/"                      # under its soname, the name the loader asks for
done
ls "$stage"/lib/libllama.so* >/dev/null 2>&1 || die "ldd of $bdir/sluice did not list libllama"
strip --strip-unneeded "$stage"/lib/*.so* "$stage/bin/sluice" 2>/dev/null || true
for icu in "$stage"/lib/libicudata.so.*; do
    [ -f "$icu" ] || continue
    soname=$(basename "$icu")                       # libicudata.so.72
    major=${soname##*.so.}
    echo "const unsigned char icudt${major}_dat[16] = {0};" >"$stage/icustub.c"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$icu" "$stage/icustub.c"
    rm "$stage/icustub.c"
done

# 4. the payload
rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" -cf - bin lib | xz -9 -T "${JOBS:-$(nproc)}" >"$out/bundle.tar.xz"
if [ "$(($(stat -c %s "$out/bundle.tar.xz") + 1024 * 1024))" -ge "$limit" ]; then
    say "bundle $(stat -c %s "$out/bundle.tar.xz") bytes with xz -9: trying xz -9e (slower; sometimes smaller)"
    tar -C "$stage" -cf - bin lib | xz -9e -T "${JOBS:-$(nproc)}" >"$out/bundle.tar.xz"
fi
cp -a "$llama_root/src/gguf-py" "$out/gguf-py"
rm -rf "$out/gguf-py/tests" "$out/gguf-py/examples"
{
    echo "flavor: $flavor"
    echo "llama.cpp: $(cat "$prefix/.sluice-complete" 2>/dev/null || echo "$prefix")"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include CMakeLists.txt || echo ' (with uncommitted changes)')"
    echo "packed: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    echo "bundle sha256: $(sha256sum "$out/bundle.tar.xz" | cut -d' ' -f1)"
    echo "unpacked: $(du -sb "$stage" | cut -f1) bytes"
    (cd "$stage" && find bin lib -maxdepth 1 -type f -printf '%s\t%p\n' | sort -k2)
} >"$out/MANIFEST"
size=$(du -sb "$out" | cut -f1)
say "payload $out: $((size / 1000)) kB ($(du -sh "$stage" | cut -f1) unpacked); with the working tree $(((size + tree) / 1000)) kB of the 67109 kB the device tool carries"
[ "$size" -lt "$limit" ] || die "payload $out is $size bytes: with the working tree ($tree bytes) and 1 MiB to spare, over the 64 MiB the device tool carries (the PTX is left out already, SLUICE_CUDA_ARCHS=90-real; what else is large: the MANIFEST lists each file)"
echo "$out"
