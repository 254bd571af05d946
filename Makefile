# sluice — the two commands: `make demo` and `make test`. Each sets up
# everything it needs first (scripts/setup.sh; fast when already done).
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
NOVIDEO_BUILD ?= build-novideo
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all setup build build-asan build-tsan build-novideo demo test test-unit chaos fuzz models-256m models-qwen3b-2l gpu-pack gpu-smoke bench bench-stages bench-engine bench-engine-host bench-tasks bench-batch bench-decode bench-video bench-video-remote bench-retry bench-scale bench-choices bench-answers bench-samples bench-image-cache bench-http bench-coord bench-s3 bench-parquet-encodings bench-parquet-dictionary clean

all: build

setup:
	@bash scripts/setup.sh

define configure_and_build
	cmake -S . -B $(1) -DSLUICE_LLAMA_PREFIX="$$(cat build/llama-prefix)" $(2) $(CMAKE_ARGS) >/dev/null
	cmake --build $(1) -j $(JOBS)
endef

build: setup
	$(call configure_and_build,$(BUILD),-DSLUICE_NOVIDEO_BIN=$(abspath $(NOVIDEO_BUILD))/sluice)

build-asan: setup
	$(call configure_and_build,$(ASAN_BUILD),-DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)

build-tsan: setup
	$(call configure_and_build,$(TSAN_BUILD),-DSLUICE_TSAN=ON -DCMAKE_BUILD_TYPE=Debug)

# The CLI without FFmpeg, as the GPU payload builds it (bench/gpu/pack.sh):
# e2e test_video.py runs it (a video row fails alone, saying why). Release
# (-O3) as the payload is: gcc warns of maybe-uninitialized variables there
# that -O2 does not see, and -Werror made the pack fail after its 45-minute
# CUDA build.
build-novideo: setup
	cmake -S . -B $(NOVIDEO_BUILD) -DSLUICE_LLAMA_PREFIX="$$(cat build/llama-prefix)" -DSLUICE_VIDEO=OFF -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null
	cmake --build $(NOVIDEO_BUILD) -j $(JOBS) --target sluice-cli

demo: build
	@echo "== sluice demo: captioning samples/ with the generated tiny model (random weights: captions are noise) =="
	$(BUILD)/sluice caption samples -o out/demo --overwrite --show 100 \
	    --model models/tiny/model.gguf --mmproj models/tiny/mmproj.gguf

test: build build-asan build-tsan build-novideo
	ctest --test-dir $(BUILD) --output-on-failure
	ctest --test-dir $(ASAN_BUILD) --output-on-failure
	ctest --test-dir $(TSAN_BUILD) --output-on-failure -L concurrency

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -L unit

# Resume under chaos (tests/e2e/test_chaos.py): a 2,000-image job killed
# with SIGKILL 20 times (12 of them inside a part commit) and rerun until it
# completes, plus the full-disk and I/O-error tests; prints where each kill
# landed. Takes minutes; `make test` runs a short version (3 kills).
# SLUICE_CHAOS_SEED=N replays a schedule.
chaos: build
	SLUICE_CHAOS=1 SLUICE_BIN=$(BUILD)/sluice .venv/bin/python -m pytest -s -q -p no:cacheprovider \
	    tests/e2e/test_chaos.py

bench: build
	$(BUILD)/bench/executor
	$(BUILD)/bench/metrics

# Rank 0 of an MPI job handing shards to 1,000 simulated ranks (threads),
# and the durable part-commit rate of the ledger (docs/deploy.md, issue 16:
# shards_per_s >= 10,000).
bench-coord: build
	$(BUILD)/bench/coord

# S3 requests with a connection kept per thread vs a new one per request,
# against moto behind a keep-alive proxy that counts accepted connections
# (docs/deploy.md "S3"; ~1 minute).
bench-s3: build
	BUILD=$(BUILD) .venv/bin/python bench/s3.py

# sluice's Parquet reader against pyarrow on one table written with each
# encoding (PLAIN, dictionary, the 2.x DELTA_*/BYTE_STREAM_SPLIT) and codec
# (snappy, zstd, lz4, brotli) (docs/parquet.md "Performance"; ~2 minutes).
bench-parquet-encodings: build
	.venv/bin/python bench/parquet_encodings.py --bin $(BUILD)/bench/parquet

# The writer's dictionary encoding against --no-dictionary on a caption
# run's output table: file size, write time, pyarrow and DuckDB read time
# (docs/parquet.md "Dictionary encoding"; ~2 minutes).
bench-parquet-dictionary: build
	.venv/bin/python bench/parquet_dictionary.py --tool $(BUILD)/tests/tools/parquet_tool

# The per-row cost of a no-op user stage over 1M rows, a C plugin and a Lua
# script (docs/stages.md; issue 13: plugin < 200 ns, Lua < 2,000 ns).
bench-stages: build
	$(BUILD)/bench/stages

# The engine at its limit on the SmolVLM-256M shape (random weights), image
# splitting capped at one 512 px tile (see docs/engine.md). Takes ~15 minutes
# on 2 cores.
bench-engine: build
	test -f models/smolvlm-256m-e512-bf16/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape smolvlm-256m --longest-edge 512 --text-dtype bf16 --out models/smolvlm-256m-e512-bf16
	$(BUILD)/bench/engine

# Three tasks of 64 tokens per image in one run against three one-task runs
# (tasks_speedup, and whether the greedy answers are equal) on the
# SmolVLM-256M shape, the model bench-engine uses (docs/engine.md, "Several
# tasks per image"). About 8 minutes on 2 cores.
bench-tasks: build
	test -f models/smolvlm-256m-e512-bf16/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape smolvlm-256m --longest-edge 512 --text-dtype bf16 --out models/smolvlm-256m-e512-bf16
	$(BUILD)/bench/tasks

# `sluice batch` against llama-server on the same text-only requests (32 of
# a ~64-token prompt, 64 tokens out) at --parallel 16 on the SmolVLM-256M
# shape's text model, llama-server driven by an asyncio client; requests/s,
# generated tok/s and sluice_vs_llama_server (docs/batch.md). About 8 minutes
# on 2 cores.
bench-batch: build
	test -f models/smolvlm-256m-e512-bf16/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape smolvlm-256m --longest-edge 512 --text-dtype bf16 --out models/smolvlm-256m-e512-bf16
	BUILD=$(BUILD) .venv/bin/python bench/batch.py

# The image cache and the prefix cache (docs/engine.md): the sample images
# asked 4 questions each, as rows and as --turns all conversations, with
# both, the image cache alone and neither, on the SmolVLM-256M shape (one
# 512 px tile); questions/s and the ratios.
bench-image-cache: build
	test -f models/smolvlm-256m-e512-bf16/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape smolvlm-256m --longest-edge 512 --text-dtype bf16 --out models/smolvlm-256m-e512-bf16
	BUILD=$(BUILD) .venv/bin/python bench/image_cache.py

# The host cost of one step of the engine's loop at --parallel 128 with a
# 152k vocabulary (Qwen2.5-VL-3B's), per sampler: reference (llama.cpp's
# chain, one sequence at a time), host, device; greedy and top-p
# (docs/engine.md, "Where the time goes"). About 20 minutes on 2 cores.
bench-engine-host: build
	test -f models/qwen3b-like-2l/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape qwen3b-like-2l --out models/qwen3b-like-2l
	$(BUILD)/bench/engine --host --model-dir models/qwen3b-like-2l --parallel 128 --tokens 16 --rounds 3

# Decode + resize to 512 px on one core, sluice vs Pillow (docs/images.md).
bench-decode: build
	.venv/bin/python bench/decode.py

# One video's 8 frames on one core: 10 s 640x360 H.264 at 30 fps (docs/images.md).
bench-video: build
	$(BUILD)/bench/video 5

# What 8 frames of a 10 s and a 60 s 640x360 clip read over HTTP (ranged
# GETs) against the whole file (bench/video_remote.py; ~1 minute).
bench-video-remote: build
	BUILD=$(BUILD) .venv/bin/python bench/video_remote.py

# --retry-failed at the start of a run: reading back and rewriting the parts
# of a 100,000-row output (1% failed) in JSONL and Parquet, against a plain
# resume (bench/retry.py; a dry run makes the output: no model; ~3 minutes).
bench-retry: build
	BUILD=$(BUILD) .venv/bin/python bench/retry.py

# Peak RSS of the whole program at 20,000 and 200,000 rows, per input format
# and side path (docs/executor.md "The whole program at 10x the rows")
bench-scale: build
	BUILD=$(BUILD) .venv/bin/python bench/scale.py

# --choices yes,no against a generated 2-token answer and a 1-token answer
# with --logprobs 10, on the sample images (twice over) and the Qwen2.5-VL-3B
# vocabulary's 2-layer model (bench/choices.py; docs/output.md "Choices").
bench-choices: build
	test -f models/qwen3b-like-2l/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape qwen3b-like-2l --out models/qwen3b-like-2l
	BUILD=$(BUILD) .venv/bin/python bench/choices.py

bench-answers: build
	test -f models/qwen3b-like-2l/model.gguf || .venv/bin/python tools/gen_model.py \
	    --shape qwen3b-like-2l --out models/qwen3b-like-2l
	BUILD=$(BUILD) .venv/bin/python bench/answers.py

# --samples 4 on the openai engine: one request with "n" vs a request per
# answer (--split-samples), through llama-server on the tiny model
# (bench/samples.py; docs/openai.md "Several answers per image").
bench-samples: build
	BUILD=$(BUILD) .venv/bin/python bench/samples.py

# The openai engine: client cost per request against nginx, and images/s
# through llama-server vs the embedded engine and the server alone
# (bench/http_bench.py; ~2 minutes).
bench-http: build
	BUILD=$(BUILD) .venv/bin/python bench/http_bench.py

# libFuzzer on every parser of untrusted input (fuzz/): FUZZ_SECONDS each
# (default 600), FUZZ_JOBS at once. Not part of `make test`, which replays
# the seed corpora and the regression inputs instead.
fuzz: setup
	bash scripts/fuzz.sh $(FUZZ_TARGETS)

models-256m: setup
	.venv/bin/python tools/gen_model.py --shape smolvlm-256m --out models/smolvlm-256m

# Qwen2.5-VL-3B's widths and 152k vocabulary with 2 text and 2 vision layers
# (~1 GB, ~12 s): the CPU benchmark of a step's host cost (bench/engine).
models-qwen3b-2l: setup
	.venv/bin/python tools/gen_model.py --shape qwen3b-like-2l --out models/qwen3b-like-2l

# What a GPU host needs for the one-shot GPU check (bench/gpu/README.md):
# CUDA llama.cpp (scripts/llama-cpp.sh; ~45 minutes the first time), sluice
# built against it and every library it loads, into build-gpu/payload-cuda
# (< 64 MB). PACK_FLAVOR=cpu packs the CPU build the same way, to test the
# path here (CPU_SMOKE=1 bash bench/gpu/run.sh).
PACK_FLAVOR ?= cuda
gpu-pack: setup
	PACK_FLAVOR=$(PACK_FLAVOR) bash bench/gpu/pack.sh

# The same path on this machine: the CPU build packed alike, run.sh with
# CPU_SMOKE=1 from a copy of the tree; the last line is the check's JSON.
gpu-smoke: setup
	bash bench/gpu/smoke.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) out
