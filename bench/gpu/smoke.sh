#!/usr/bin/env bash
# The GPU check's CPU smoke test (bench/gpu/README.md): pack the CPU build
# the way pack.sh packs the CUDA one, copy the working tree as the device
# tool does (tracked and untracked, not ignored, files; the payload read-only)
# to SMOKE_DIR, and run run.sh there with CPU_SMOKE=1. Its last line is the
# check's JSON object. A few minutes on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
dir=${SMOKE_DIR:-/tmp/sluice-gpu-smoke}
PACK_FLAVOR=cpu bash bench/gpu/pack.sh >/dev/null
[ -d "$dir" ] && chmod -R u+w "$dir"
rm -rf "$dir"
mkdir -p "$dir/tree/build-gpu"
git ls-files -co --exclude-standard | tar -T - -cf - | tar -C "$dir/tree" -xf -
cp -r build-gpu/payload-cpu "$dir/tree/build-gpu/"
chmod -R a-w "$dir/tree/build-gpu/payload-cpu"
echo "payload: $(du -sh build-gpu/payload-cpu | cut -f1); tree copy: $dir/tree" >&2
cd "$dir/tree"
CPU_SMOKE=1 PYTHON=${PYTHON:-$repo/.venv/bin/python} OUT=$dir/out WORK=$dir/work exec bash bench/gpu/run.sh
