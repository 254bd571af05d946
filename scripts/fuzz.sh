#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) in build-fuzz and runs each
# for FUZZ_SECONDS (default 600), FUZZ_JOBS at a time (default 1), starting
# from fuzz/corpus/<name> plus what earlier runs found (build-fuzz/corpus).
#   scripts/fuzz.sh [TARGET...]        (default: every target)
# A crash leaves its input in build-fuzz/artifacts/<name>/; the summary line
# of each target gives executions, corpus size and crashes. Add a fixed
# crash's input to fuzz/regress/<name>/ so `make test` replays it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}
out=${FUZZ_BUILD:-build-fuzz}
command -v clang >/dev/null || { echo "fuzz: clang is missing: apt-get install clang libclang-rt-14-dev" >&2; exit 2; }
CC=clang cmake -S . -B "$out" -DSLUICE_LLAMA_PREFIX="$(cat build/llama-prefix)" \
    -DSLUICE_FUZZ=ON -DSLUICE_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # the list may span lines: everything from "set(SLUICE_FUZZ_TARGETS" to its ")"
    targets=($(sed -n '/^set(SLUICE_FUZZ_TARGETS/,/)/p' fuzz/CMakeLists.txt |
               sed -e 's/^set(SLUICE_FUZZ_TARGETS//' -e 's/)//')
             $(sed -n 's/^ *list(APPEND SLUICE_FUZZ_TARGETS \(.*\))/\1/p' fuzz/CMakeLists.txt))
fi
cmake --build "$out" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >"$out/build.log" 2>&1 ||
    { tail -n 40 "$out/build.log"; echo "fuzz: the build failed (whole log: $out/build.log)" >&2; exit 1; }

run_one() {
    local name=$1 corpus="$out/corpus/$1" art="$out/artifacts/$1/" log="$out/fuzz-$1.log"
    mkdir -p "$corpus" "$art"
    local dict=()
    [ -f "fuzz/$name.dict" ] && dict=(-dict="fuzz/$name.dict")
    # -fork keeps going after a crash, so one run finds more than one bug.
    "$out/fuzz/fuzz_$name" "$corpus" "fuzz/corpus/$name" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$art" -fork=1 -ignore_crashes=1 \
        -ignore_timeouts=1 -ignore_ooms=1 >"$log" 2>&1 || true
    local execs crashes
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | awk '{s+=$1} END {print s+0}')
    [ "$execs" = 0 ] && execs=$(grep -o '#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    crashes=$(find "$art" -type f | wc -l)
    printf 'fuzz %-16s %6ss  execs %-10s corpus %-6s crash/timeout/oom inputs %s\n' "$name" "$seconds" \
        "${execs:-?}" "$(find "$corpus" -type f | wc -l)" "$crashes"
}
export -f run_one
export out seconds
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
