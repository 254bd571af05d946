#!/usr/bin/env bash
# Provide llama.cpp (headers, libllama, libggml*, libmtmd, llama-server,
# llama-mtmd-cli) in a prefix outside the repository, and print that prefix
# as the last line of stdout.
#
# Order: $SLUICE_LLAMA_PREFIX if set; a system llama.cpp with mtmd
# (pkg-config 'llama' plus mtmd.h and the two programs); otherwise build the
# llama.cpp carried by the pinned llama-cpp-python sdist into
#   ${SLUICE_CACHE:-~/.cache/sluice}/llama.cpp/<version>-<cpu|cuda>/prefix
# A complete prefix (stamp file present) is reused as is. A CPU build's
# prefix also holds .sluice-cpu-flags, the /proc/cpuinfo flags line of the
# machine that compiled it (GGML_NATIVE), which sluice's configure reads.
#
# Options (environment): SLUICE_LLAMA_CUDA=1 builds with CUDA;
# SLUICE_CUDA_ARCHS the GPU architectures (default "80;90": A100, H100/H200;
# each one adds build time); SLUICE_JOBS sets build parallelism (default: nproc).
# A CUDA build is portable across x86-64 hosts (GGML_NATIVE=OFF: the CPU
# backend for AVX2/FMA/F16C, not this machine's CPU; no NCCL), since it is
# often built on a CPU machine and carried to a GPU host (bench/gpu/pack.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

say() { echo "[llama.cpp] $*" >&2; }
die() { echo "[llama.cpp] error: $*" >&2; exit 1; }

has_prefix() {
    local p=$1
    [ -f "$p/include/llama.h" ] && [ -f "$p/include/mtmd.h" ] &&
    ls "$p"/lib/libllama.so* >/dev/null 2>&1 && ls "$p"/lib/libmtmd.so* >/dev/null 2>&1 &&
    [ -x "$p/bin/llama-server" ] && [ -x "$p/bin/llama-mtmd-cli" ]
}

if [ -n "${SLUICE_LLAMA_PREFIX:-}" ]; then
    has_prefix "$SLUICE_LLAMA_PREFIX" ||
        die "SLUICE_LLAMA_PREFIX=$SLUICE_LLAMA_PREFIX lacks include/{llama,mtmd}.h, lib/lib{llama,mtmd}.so or bin/{llama-server,llama-mtmd-cli}"
    say "using SLUICE_LLAMA_PREFIX=$SLUICE_LLAMA_PREFIX"
    echo "$SLUICE_LLAMA_PREFIX"; exit 0
fi

if command -v pkg-config >/dev/null && pkg-config --exists llama 2>/dev/null; then
    sysprefix=$(pkg-config --variable=prefix llama)
    if has_prefix "$sysprefix"; then
        say "using system llama.cpp at $sysprefix"
        echo "$sysprefix"; exit 0
    fi
    say "system llama.cpp at $sysprefix has no mtmd or tools; building our own"
fi

flavor=cpu
[ "${SLUICE_LLAMA_CUDA:-0}" = 1 ] && flavor=cuda
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
root=$cache/llama.cpp/$LLAMA_CPP_PYTHON_VERSION-$flavor
prefix=$root/prefix
stamp=$prefix/.sluice-complete
archs=${SLUICE_CUDA_ARCHS:-80;90}
stamp_text="llama-cpp-python $LLAMA_CPP_PYTHON_VERSION ($flavor)"
[ "$flavor" = cuda ] && stamp_text="llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (cuda, archs $archs, portable)"

if [ -f "$stamp" ] && has_prefix "$prefix"; then
    if [ "$(cat "$stamp")" = "$stamp_text" ]; then
        say "reusing cached build $prefix"
        echo "$prefix"; exit 0
    fi
    say "cached build $prefix is '$(cat "$stamp")', not '$stamp_text': rebuilding"
fi

command -v cmake >/dev/null || die "cmake not found: run scripts/setup.sh (apt-get install cmake)"
command -v g++ >/dev/null || die "g++ not found: run scripts/setup.sh (apt-get install g++)"

mkdir -p "$root"
sdist=$root/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
if [ ! -f "$sdist" ] || ! echo "$LLAMA_CPP_PYTHON_SHA256  $sdist" | sha256sum -c --status; then
    say "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION source distribution from PyPI"
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$tmp" ||
        die "pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed: check that PyPI is reachable"
    mv "$tmp"/llama_cpp_python-*.tar.gz "$sdist"
    rm -rf "$tmp"
fi
echo "$LLAMA_CPP_PYTHON_SHA256  $sdist" | sha256sum -c --status ||
    die "sha256 of $sdist is $(sha256sum "$sdist" | cut -d' ' -f1), expected $LLAMA_CPP_PYTHON_SHA256 (scripts/versions.sh)"

src=$root/src
if [ ! -f "$src/CMakeLists.txt" ]; then
    say "unpacking vendor/llama.cpp from the sdist"
    rm -rf "$src" "$root/unpack"; mkdir -p "$root/unpack"
    tar -xzf "$sdist" -C "$root/unpack"
    mv "$root/unpack"/llama_cpp_python-*/vendor/llama.cpp "$src"
    rm -rf "$root/unpack"
    [ -f "$src/tools/mtmd/mtmd.h" ] || die "the sdist's llama.cpp has no tools/mtmd: pin another llama-cpp-python version"
fi

cuda_flags=(-DGGML_CUDA=OFF -DGGML_NATIVE=ON)
minutes=10-30
if [ "$flavor" = cuda ]; then
    command -v nvcc >/dev/null || die "SLUICE_LLAMA_CUDA=1 but nvcc is not on PATH (e.g. PATH=/usr/local/cuda/bin:\$PATH)"
    # No NCCL: it would tie libggml-cuda to the build machine's libnccl, and
    # sluice runs one replica per GPU (no tensor split across cards).
    # libggml-cuda needs libcuda.so.1 (the driver API: cuMemCreate, ...),
    # which only a host with a GPU driver has: the tools linked here
    # (llama-server) leave it to be resolved there.
    cuda_flags=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$archs" -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF
                -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined)
    minutes="about 45 per architecture"
fi

# The CPU this build compiles for (GGML_NATIVE: -march=native), which
# sluice's configure reads from the prefix to refuse a CPU without its SIMD
# extensions: this machine's, not the one that configures sluice (a cache
# shared over NFS by nodes of other CPUs). A build folder another CPU
# compiled into (a stamp removed on another node) is removed first: cmake
# would keep its objects (the flags' text, -march=native, is the same)
# and the prefix would name this CPU for that one's code. So is one with no
# note (an older script's build folder, whose CPU is unknown), as this runs
# only when the prefix is rebuilt anyway. Empty where /proc/cpuinfo names no
# flags (not x86): nothing to check then. Only the SIMD extensions count
# (cmake/llama_simd_flags.txt, the list sluice's configure checks): nodes
# of one CPU model under another kernel or hypervisor differ in flags such
# as hypervisor, md_clear or user_shstk, and a 10-30 minute recompile for
# those would buy nothing. The whole line is still written: the configure
# picks the SIMD ones out of it.
simd_list=$here/../cmake/llama_simd_flags.txt
# The SIMD flags of a /proc/cpuinfo flags line, sorted, one a line.
simd_of() {
    printf '%s\n' "$1" | sed 's/^flags[[:space:]]*:[[:space:]]*//' | tr -s ' \t' '\n\n' |
        { grep -Ex -f <(grep -Ev '^(#|$)' "$simd_list") || true; } | sort -u
}
if [ "$flavor" = cpu ]; then
    [ -f "$simd_list" ] || die "$simd_list is missing: it lists the SIMD flags a CPU build is checked for"
    cpu_flags=$(grep -m1 '^flags[[:space:]]*:' /proc/cpuinfo || true)
    if [ -d "$root/build" ] && [ ! -f "$root/build/.sluice-cpu-flags" ]; then
        say "$root/build does not say which CPU compiled it (an older scripts/llama-cpp.sh's): removing it to compile for this one"
        rm -rf "$root/build"
    elif [ -f "$root/build/.sluice-cpu-flags" ]; then
        built_simd=$(simd_of "$(cat "$root/build/.sluice-cpu-flags")")
        this_simd=$(simd_of "$cpu_flags")
        if [ "$built_simd" != "$this_simd" ]; then
            theirs=$(comm -23 <(echo "$built_simd") <(echo "$this_simd") | xargs)
            ours=$(comm -13 <(echo "$built_simd") <(echo "$this_simd") | xargs)
            say "$root/build was compiled on a CPU with other SIMD flags (${theirs:-none} there, not here; ${ours:-none} here, not there): removing it to compile for this one"
            rm -rf "$root/build"
        fi
    fi
    mkdir -p "$root/build"
    printf '%s\n' "$cpu_flags" >"$root/build/.sluice-cpu-flags"
fi

say "configuring ($flavor) in $root/build"
cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON "${cuda_flags[@]}" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib:$ORIGIN' \
    >"$root/configure.log" 2>&1 || die "cmake configure failed; see $root/configure.log"

jobs=${SLUICE_JOBS:-$(nproc)}
say "building llama, mtmd, llama-server, llama-mtmd-cli with $jobs jobs (a cold build takes $minutes minutes on 2 cores)"
cmake --build "$root/build" -j "$jobs" --target llama mtmd llama-server llama-mtmd-cli \
    >"$root/build.log" 2>&1 || die "build failed; see the tail of $root/build.log"

say "staging into $prefix"
rm -rf "$prefix"; mkdir -p "$prefix/include" "$prefix/lib" "$prefix/bin"
cp -a "$src"/include/*.h "$src"/ggml/include/*.h "$prefix/include/"
cp -a "$src"/tools/mtmd/mtmd.h "$src"/tools/mtmd/mtmd-helper.h "$prefix/include/"
cp -a "$root"/build/bin/*.so* "$prefix/lib/"
cp -a "$root"/build/bin/llama-server "$root"/build/bin/llama-mtmd-cli "$prefix/bin/"
# Beside the stamp, not in it: the stamp is the cache key, and a new text
# would rebuild every cached prefix.
if [ "$flavor" = cpu ]; then
    cp "$root/build/.sluice-cpu-flags" "$prefix/.sluice-cpu-flags"
fi
echo "$stamp_text" >"$stamp"
has_prefix "$prefix" || die "staged prefix $prefix is incomplete"
say "done: $prefix"
echo "$prefix"
