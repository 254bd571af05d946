#!/usr/bin/env bash
# The one-shot GPU check (bench/gpu/README.md). On a GPU host, in a copy of
# the repository with build-gpu/payload-cuda beside it (make gpu-pack):
#
#     bash bench/gpu/run.sh
#
# unpacks the payload, generates the models (tools/gen_model.py
# --fast-weights), runs the sweep (one sluice run each, /metrics scraped and
# nvidia-smi sampled during it), then the transformers baseline, and prints
# ONE JSON object as its last line. Everything ends inside DEADLINE seconds
# (default 470): each run has its own time limit, and a run that would not
# fit before the baseline's reserved time is skipped (the order below is by
# importance).
#
# Environment:
#   OUT        results (default /tmp/sluice-gpu-out; the device tool sets it):
#              final.json, results.jsonl (a line per run), runs.tgz (logs,
#              the last scrape of /metrics, the final _metrics.prom, the
#              nvidia-smi samples of each run)
#   WORK       unpacked payload, images, models, run outputs (default /tmp/sluice-gpu);
#              a second call reuses what is there
#   PAYLOAD    default build-gpu/payload-cuda (payload-cpu with CPU_SMOKE=1)
#   PYTHON     default python3: numpy, Pillow, PyYAML, tqdm; torch and
#              transformers for the baseline
#   CPU_SMOKE=1  test the whole path on a CPU machine: the CPU payload, no
#              nvidia-smi and no --gpus, the 2-layer qwen25vl-3b-2l model, a
#              handful of images, 4 tokens, 180 s a run and 900 in all; the
#              baseline only if torch is there
#   QUICK=1    the three main runs only (q25-p128, q25-e4, s256-p128) and a shorter
#              baseline
#   RUNS="q25-p128 hf"  only these (names below; hf is the baseline)
#   T_RUN T_DRAIN  a run gets SIGINT at T_RUN s (default 50; sluice then
#              finishes the rows in flight), a second at T_RUN+T_DRAIN (25;
#              it stops at once), SIGKILL 10 s later
#   MAX_TOKENS (200), N_IMG (1024), EXTRA_ARGS (added to every sluice run),
#   HF_N HF_BATCH HF_BUDGET HF_TO (256, 128, 60 s of generation, 120 s in all)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
G=$repo/bench/gpu
smoke=${CPU_SMOKE:-0}
flavor=cuda
[ "$smoke" = 1 ] && flavor=cpu
P=${PAYLOAD:-$repo/build-gpu/payload-$flavor}
O=${OUT:-/tmp/sluice-gpu-out}
W=${WORK:-/tmp/sluice-gpu}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-470}
T_RUN=${T_RUN:-50}
T_DRAIN=${T_DRAIN:-25}
if [ "$smoke" = 1 ]; then # 2 shared cores: slower than a GPU host's, and timing is not the point
    DEADLINE=${DEADLINE_SMOKE:-900}; T_RUN=${T_RUN_SMOKE:-180}
    MAX_TOKENS=${MAX_TOKENS:-4}; N_IMG=${N_IMG:-4}; DW=2
    HF_ARGS=(4 2 "$MAX_TOKENS" --tiny --budget 30); HF_TO=${HF_TO:-120}
else
    MAX_TOKENS=${MAX_TOKENS:-200}; N_IMG=${N_IMG:-1024}; DW=8
    HF_ARGS=("${HF_N:-256}" "${HF_BATCH:-128}" "$MAX_TOKENS" --budget "${HF_BUDGET:-60}"); HF_TO=${HF_TO:-120}
    [ -n "${QUICK:-}" ] && HF_ARGS=("${HF_N:-128}" "${HF_BATCH:-128}" "$MAX_TOKENS" --budget "${HF_BUDGET:-30}")
fi
mkdir -p "$O" "$W"
: >"$O/results.jsonl"
rm -f "$O/baseline.json" "$O/final.json"
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
log() { echo "== +$(el)s $*"; }
want() { [ -z "${RUNS:-}" ] || [[ " $RUNS " == *" $1 "* ]]; }

gpu_desc=cpu
sluice_version=
children=()
# The one JSON line, also when the check fails part way ($1: the reason).
finish() {
    local err=${1:-}
    for c in "${children[@]}"; do kill "$c" 2>/dev/null; done
    (
        cd "$O" || exit
        shopt -s nullglob
        raw=(log-* metrics-* smi-* series-* summary-* hf_peer*.txt)
        [ ${#raw[@]} -eq 0 ] || { tar czf runs.tgz "${raw[@]}" && rm -f "${raw[@]}"; }
    )
    local meta
    meta=$(ERR="$err" GPU="$gpu_desc" VER="$sluice_version" MAN="$P/MANIFEST" "$PY" -c '
import json, os, sys
m = {}
try:
    for l in open(os.environ["MAN"]):
        k, _, v = l.partition(": ")
        if k in ("flavor", "commit", "llama.cpp", "packed"): m[k] = v.strip()
except OSError: pass
d = {"check": "sluice-gpu", "mode": sys.argv[1], "gpu": os.environ["GPU"], "sluice": os.environ["VER"],
     "payload": m, "max_tokens": int(sys.argv[2]), "images": int(sys.argv[3]),
     "elapsed_s": int(sys.argv[4]), "deadline_s": int(sys.argv[5]), "out": sys.argv[6]}
if os.environ["ERR"]: d["error"] = os.environ["ERR"]
print(json.dumps(d))' "$([ "$smoke" = 1 ] && echo cpu-smoke || echo gpu)" "$MAX_TOKENS" "$N_IMG" "$(el)" "$DEADLINE" "$O" 2>/dev/null)
    if [ -n "$meta" ] && "$PY" "$G/gpucheck.py" final "$O" "$meta"; then
        :
    else # no usable python: still one JSON line
        printf '{"check":"sluice-gpu","error":"%s","python":"%s unusable"}\n' "${err//\"/\'}" "$PY"
    fi
}
fail() {
    log "FAILED: $*"
    finish "$*"
    exit 1
}
trap 'log "terminated"; finish "terminated at +$(el)s"; exit 1' TERM INT

# 1. the host ------------------------------------------------------------------
log "sluice GPU check ($([ "$smoke" = 1 ] && echo "CPU smoke test" || echo GPU)), results in $O"
echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory, $(uname -r)"
if [ "$smoke" != 1 ]; then
    command -v nvidia-smi >/dev/null || fail "no nvidia-smi: not a GPU host (CPU_SMOKE=1 tests the path on a CPU)"
    gpu_desc=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)
    echo "gpu: $gpu_desc"
fi
[ -f "$P/bundle.tar.xz" ] || fail "no payload at $P: run 'make gpu-pack' on the CPU machine and carry build-gpu/payload-$flavor"
sed -n '1,6p' "$P/MANIFEST"

# 2. unpack (into WORK: the payload may be read-only) ------------------------------
pkg=$W/pkg
sha=$(sha256sum "$P/bundle.tar.xz" | cut -c1-16)
if [ "$(cat "$pkg/.sha" 2>/dev/null)" != "$sha" ]; then
    rm -rf "$pkg"
    mkdir -p "$pkg"
    tar -C "$pkg" -xJf "$P/bundle.tar.xz" 2>/dev/null ||
        "$PY" -c 'import sys, tarfile; t = tarfile.open(sys.argv[1]); t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' \
            "$P/bundle.tar.xz" "$pkg" || fail "cannot unpack $P/bundle.tar.xz"
    echo "$sha" >"$pkg/.sha"
fi
S=$pkg/bin/sluice
log "unpacked into $pkg ($(du -sh "$pkg" | cut -f1))"

# 3. library paths: the payload's lib/ first, then wherever this host keeps
#    what the payload leaves out (CUDA runtime, cuBLAS, the driver, NVML),
#    never a toolkit's compat/ or stubs/ copy of libcuda
libs=$pkg/lib
export LD_LIBRARY_PATH=$libs
host_libs='/(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libgcc_s|libstdc\+\+|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnvidia[^/]*|libnvrtc[^/]*)\.so'
if [ "$smoke" != 1 ]; then
    roots=(/usr/local/nvidia /usr/local/cuda /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local /opt /usr/lib)
    mapfile -t site < <("$PY" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
    for m in $(ldd "$S" | awk '/not found/ {print $1}' | sort -u) libnvidia-ml.so.1; do
        ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$m " && continue
        f=$(find "${roots[@]}" "${site[@]}" -maxdepth 8 -name "$m" 2>/dev/null | grep -v -e /compat/ -e /stubs/ | head -n 1)
        [ -n "$f" ] || { echo "warning: $m not found on this host"; continue; }
        d=$(dirname "$f")
        case ":$libs:" in *":$d:"*) ;; *) libs=$libs:$d ;; esac
    done
    export LD_LIBRARY_PATH=$libs
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
notfound=$(ldd "$S" | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
[ -z "$notfound" ] || fail "libraries not found: $notfound"
outside=$(ldd "$S" | awk '/=> \// {print $3}' | grep -vE "$host_libs" | grep -v "^$pkg/lib/" | tr '\n' ' ')
if [ -n "$outside" ]; then
    [ "$smoke" = 1 ] && fail "libraries resolved outside the payload (pack.sh missed them): $outside"
    echo "warning: libraries from the host, not the payload: $outside"
fi
ldd "$S" | grep -E "libllama|libggml-cuda|libcudart|libcublas\.|libcuda\.|libvips" | sed 's/ (0x.*//'
sluice_version=$("$S" --version 2>&1) || fail "sluice does not start: $sluice_version"
log "$sluice_version starts"

# 4. Python, images, models ---------------------------------------------------------
export PYTHONPATH=$P/gguf-py${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c 'import sys, numpy, PIL, gguf; print("python", sys.version.split()[0], "numpy", numpy.__version__, "gguf from", gguf.__file__)' ||
    fail "$PY lacks numpy, Pillow, PyYAML or tqdm (pip install numpy pillow pyyaml tqdm), or cannot import $P/gguf-py"
imgs=$W/imgs-$N_IMG
if [ "$(find "$imgs" -name '*.jpg' 2>/dev/null | wc -l)" != "$N_IMG" ]; then
    rm -rf "$imgs"
    "$PY" "$G/gpucheck.py" images "$repo/samples" "$imgs" "$N_IMG" || fail "cannot make the images"
fi
log "$N_IMG images in $imgs"
gen() { # DIR gen_model.py-args...: generate unless the same arguments made it already
    local dir=$1
    shift
    local stamp
    stamp="$(sha256sum "$repo/tools/gen_model.py" | cut -c1-16) $*"
    [ -f "$dir/model.gguf" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    local t
    t=$(date +%s)
    "$PY" "$repo/tools/gen_model.py" --fast-weights --out "$dir" "$@" | tail -n 3 || return 1
    echo "$stamp" >"$dir/.stamp"
    echo "   ($(($(date +%s) - t)) s)"
}
# both at once: each is mostly one core and the disk
# Qwen2.5-VL-3B's own architecture (M-RoPE, its vision tower and merger),
# 256 tokens an image as the baseline's 448 x 448
big=qwen25vl-3b
[ "$smoke" = 1 ] && big=qwen25vl-3b-2l
mbig=$W/m25
[ "$smoke" = 1 ] && mbig=$W/m252l
Q=(--image-max-tokens 256)
gen "$mbig" --shape "$big" >"$O/gen-big.txt" 2>&1 &
g1=$!
gen "$W/m256" --shape smolvlm-256m --longest-edge 512 --text-dtype bf16 >"$O/gen-256.txt" 2>&1 &
g2=$!
wait "$g1"
r1=$?
wait "$g2"
r2=$?
cat "$O/gen-big.txt" "$O/gen-256.txt"
rm -f "$O/gen-big.txt" "$O/gen-256.txt"
[ "$r1" = 0 ] || fail "gen_model.py --shape $big failed"
[ "$r2" = 0 ] || fail "gen_model.py --shape smolvlm-256m failed"
log "models"

# 5. the sweep ----------------------------------------------------------------------
port=$((20000 + RANDOM % 20000))
hf_reserve=0
want hf && hf_reserve=$((HF_TO + 10))
# run_one NAME MODEL_DIR MODEL_LABEL sluice-args...
run_one() {
    local name=$1 mdir=$2 mlabel=$3
    shift 3
    want "$name" || return 0
    local worst=$((T_RUN + T_DRAIN + 10))
    if [ $(($(el) + worst + hf_reserve)) -gt "$DEADLINE" ]; then
        log "skip $name (deadline)"
        echo "{\"run\":\"$name\",\"skipped\":\"deadline\"}" >>"$O/results.jsonl"
        return 0
    fi
    port=$((port + 1))
    local ro=$W/out-$name smi=
    log "run $name: $*"
    if [ "$smoke" != 1 ]; then
        nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits \
            -lms 500 >"$O/smi-$name.csv" 2>/dev/null &
        smi=$!
        children+=("$smi")
    fi
    local t0 t1 pid scr rc i=0 stopped="done"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # EXTRA_ARGS is a list of words
    "$S" caption "$imgs" -o "$ro" --overwrite --show 1 --progress-every 5 --max-tokens "$MAX_TOKENS" \
        --decode-workers "$DW" --metrics-addr "127.0.0.1:$port" \
        --model "$mdir/model.gguf" --mmproj "$mdir/mmproj.gguf" "$@" ${EXTRA_ARGS:-} >"$O/log-$name.txt" 2>&1 &
    pid=$!
    children+=("$pid")
    "$PY" "$G/gpucheck.py" scrape "$pid" "http://127.0.0.1:$port/metrics" "$O/metrics-$name.prom" "$O/series-$name.tsv" &
    scr=$!
    children+=("$scr")
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        i=$((i + 1))
        case $i in
        "$T_RUN") kill -INT "$pid" 2>/dev/null; stopped="time" ;;
        $((T_RUN + T_DRAIN))) kill -INT "$pid" 2>/dev/null; stopped=time-second-signal ;;
        $((T_RUN + T_DRAIN + 10))) kill -KILL "$pid" 2>/dev/null; stopped=killed ;;
        esac
    done
    wait "$pid"
    rc=$?
    t1=$(date +%s.%N)
    [ -n "$smi" ] && { kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null; }
    wait "$scr" 2>/dev/null
    children=()
    [ -f "$ro/_metrics.prom" ] && cp "$ro/_metrics.prom" "$O/metrics-$name.final.prom"
    [ -f "$ro/_summary.json" ] && cp "$ro/_summary.json" "$O/summary-$name.json"
    "$PY" "$G/gpucheck.py" result --name "$name" --model "$mlabel" --rc "$rc" --t0 "$t0" --t1 "$t1" \
        --run-out "$ro" --out "$O" --stopped "$stopped" --args "$*" | tee -a "$O/results.jsonl"
    grep -E "images:|busy:|error" "$O/log-$name.txt" | tail -n 3
    rm -rf "$ro"
}
if [ "$smoke" = 1 ]; then
    run_one q252l-p4 "$mbig" "$big" "${Q[@]}" --parallel 4
    run_one s256-p4 "$W/m256" smolvlm-256m --parallel 4
    run_one q252l-r2 "$mbig" "$big" "${Q[@]}" --replicas 2 --parallel 2
    run_one q252l-e2 "$mbig" "$big" "${Q[@]}" --parallel 4 --encoders 2
else # by importance: what is skipped at the deadline is the end of the list
    run_one q25-p128 "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 128
    # four encoder threads, each its own vision context and stream
    run_one q25-e4 "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 128 --encoders 4
    run_one s256-p128 "$W/m256" smolvlm-256m --gpus 0 --parallel 128
    if [ -z "${QUICK:-}" ]; then
        run_one q25-r2 "$mbig" "$big" "${Q[@]}" --replicas 2 --parallel 128
        run_one q25-p255 "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 255
        run_one q25-p64 "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 64
        # choices: host-scored rows (one decode step, a probe a row for
        # "1"/"10" on Qwen's digits) among the device-sampled path's
        run_one q25-rate "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 128 \
            --choices 1,2,3,4,5,6,7,8,9,10
        # the vision side's ceiling with four encoders
        run_one q25-rate-e4 "$mbig" "$big" "${Q[@]}" --gpus 0 --parallel 128 --encoders 4 \
            --choices 1,2,3,4,5,6,7,8,9,10
    fi
fi
log "sluice runs done"

# 6. the baseline: transformers generate() on the same GPU ------------------------------
if want hf; then
    if ! "$PY" -c 'import torch, transformers' 2>/dev/null; then
        log "baseline skipped: $PY cannot import torch and transformers"
        echo '{"skipped":"torch or transformers not importable"}' >"$O/baseline.json"
    else
        log "baseline: hf_peer.py ${HF_ARGS[*]}"
        timeout -s KILL "$HF_TO" "$PY" "$G/hf_peer.py" "${HF_ARGS[@]}" >"$O/hf_peer.txt" 2>&1
        rc=$?
        tail -n 4 "$O/hf_peer.txt"
        if tail -n 1 "$O/hf_peer.txt" | grep -q '^{'; then
            tail -n 1 "$O/hf_peer.txt" >"$O/baseline.json"
        else
            echo "{\"skipped\":\"hf_peer.py failed (exit $rc; see hf_peer.txt in runs.tgz)\"}" >"$O/baseline.json"
        fi
    fi
fi
log "all done"
finish
