#!/usr/bin/env bash
# Set up everything sluice needs to build, test and run its demo, on a fresh
# Debian 12 machine (run as root) or an already set-up one (fast, no change).
#   1. Debian packages for the build and the tests
#   2. llama.cpp (system, SLUICE_LLAMA_PREFIX, or built from the pinned
#      llama-cpp-python sdist into ~/.cache/sluice — see scripts/llama-cpp.sh)
#   3. the helper virtualenv .venv (tests, generators, benchmarks only)
#   4. the generated tiny test model in models/tiny
#   (and nanoarrow, for Arrow IPC inputs, from the pinned nanoarrow sdist:
#   scripts/nanoarrow.sh)
# Writes build/llama-prefix and build/nanoarrow-prefix (the prefixes CMake uses).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
t0=$(date +%s)
say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

# 1. Debian packages ---------------------------------------------------------
packages=(
    build-essential cmake pkg-config git ca-certificates patch
    python3 python3-venv python3-pip
    libvips-dev libjansson-dev libcmocka-dev libjpeg62-turbo-dev libexif-dev
    libmicrohttpd-dev prometheus
    libzstd-dev libsnappy-dev zlib1g-dev liblz4-dev libbrotli-dev
    libcurl4-openssl-dev libssl-dev libarchive-dev libsqlite3-dev libyaml-dev libxml2-dev
    liblzma-dev libbz2-dev
    liblua5.4-dev
    libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
    chromium nginx-light
    clang libclang-rt-14-dev
    openmpi-bin libopenmpi-dev iproute2
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: all ${#packages[@]} present"
elif [ "$(id -u)" -eq 0 ]; then
    say "Debian packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed: check the network and /etc/apt/sources.list"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
else
    die "missing Debian packages: ${missing[*]} — run this script as root, or: sudo apt-get install ${missing[*]}"
fi

# 2. llama.cpp -----------------------------------------------------------------
prefix=$(bash "$repo/scripts/llama-cpp.sh" | tail -n 1) || die "llama.cpp is not available (see above)"
mkdir -p build
echo "$prefix" >build/llama-prefix
naprefix=$(bash "$repo/scripts/nanoarrow.sh" | tail -n 1) || die "nanoarrow is not available (see above)"
echo "$naprefix" >build/nanoarrow-prefix
say "nanoarrow: $naprefix"
say "llama.cpp: $prefix"

# 3. helper virtualenv ---------------------------------------------------------
. "$repo/scripts/versions.sh"
venv=$repo/.venv
gguf_src=$(ls -d "${SLUICE_CACHE:-$HOME/.cache/sluice}"/llama.cpp/"$LLAMA_CPP_PYTHON_VERSION"-*/src/gguf-py 2>/dev/null | head -n 1 || true)
want="$(sha256sum tools/requirements.txt | cut -c1-16) gguf:${gguf_src:-pypi}"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.sluice-stamp" 2>/dev/null)" = "$want" ]; then
    say "virtualenv: $venv up to date"
else
    say "virtualenv: creating $venv"
    /usr/bin/python3 -m venv "$venv" || die "python3 -m venv failed: apt-get install python3-venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r tools/requirements.txt || die "pip install -r tools/requirements.txt failed"
    # gguf from the llama.cpp we build, so GGUF keys match our libmtmd.
    if [ -n "$gguf_src" ]; then
        "$venv/bin/pip" install -q "$gguf_src" || die "pip install $gguf_src failed"
    else
        "$venv/bin/pip" install -q gguf || die "pip install gguf failed"
    fi
    echo "$want" >"$venv/.sluice-stamp"
fi

# 4. generated test model -------------------------------------------------------
gen_stamp="$(sha256sum tools/gen_model.py | cut -c1-16)"
if [ -f models/tiny/model.gguf ] && [ -f models/tiny/mmproj.gguf ] &&
   [ "$(cat models/tiny/.sluice-stamp 2>/dev/null)" = "$gen_stamp" ]; then
    say "models/tiny: up to date"
else
    say "models/tiny: generating (random weights)"
    "$venv/bin/python" tools/gen_model.py --shape tiny --out models/tiny >/dev/null ||
        die "tools/gen_model.py --shape tiny failed"
    echo "$gen_stamp" >models/tiny/.sluice-stamp
fi
# The same at Qwen2.5-VL's architecture (M-RoPE, its own vision tower): tests/e2e/test_qwen.py
if [ -f models/tiny-qwen/model.gguf ] && [ -f models/tiny-qwen/mmproj.gguf ] &&
   [ "$(cat models/tiny-qwen/.sluice-stamp 2>/dev/null)" = "$gen_stamp" ]; then
    say "models/tiny-qwen: up to date"
else
    say "models/tiny-qwen: generating (random weights)"
    "$venv/bin/python" tools/gen_model.py --shape tiny-qwen --out models/tiny-qwen >/dev/null ||
        die "tools/gen_model.py --shape tiny-qwen failed"
    echo "$gen_stamp" >models/tiny-qwen/.sluice-stamp
fi

say "done in $(( $(date +%s) - t0 )) s"
