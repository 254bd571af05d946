"""The embedded engine at its edges (docs/engine.md "Sizing"): settings
that can never fit stop the job with exit 2 naming what to change, and
what to change is the thing that does not fit."""
import json
import os
import pathlib
import re
import resource
import shutil
import socket
import subprocess

import pytest

from conftest import REPO, TINY, interrupt_when_said, native_flags, read_rows, sanitized

QWEN = REPO / "models" / "tiny-qwen"

def test_a_system_prompt_past_the_context_is_named(sluice, four, tmp_path):
    """A --system of 15,000 tokens is in every request: the load-time check
    names it and says to shorten it (it used to say only to lower
    --max-tokens or --max-image-edge, which were 4 tokens and 49 positions);
    a --max-tokens past the context is still told to lower that alone."""
    long = "word " * 5000
    r = sluice.caption(four, tmp_path / "sys", "--system", long, "-n", 4,
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "of which the system prompt takes 150" in r.stderr, r.stderr
    assert "shorten the system prompt (--system), lower --max-tokens" in r.stderr, r.stderr
    assert not list((tmp_path / "sys").glob("part-*")), "no row may be written"
    r = sluice.caption(four, tmp_path / "n", "-n", 100000, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "system prompt" not in r.stderr and "lower --max-tokens" in r.stderr, r.stderr


def test_a_projector_made_for_another_model_stops_the_job(sluice, four, tmp_path):
    """tiny's idefics3 projector with tiny-qwen's Qwen2-VL model (the same
    width, so libmtmd loads the pair): the projector's image marker tokens
    are not in the model's vocabulary (-1), and every row failed with
    "llama_decode failed (code -1)" (exit 3), each taking the rows batched
    with it down. Now the load-time probe sees it: exit 2 naming both
    files, no row written, with --ctx (no sizing probe needed) too."""
    for extra in ((), ("--ctx", 512)):
        out = tmp_path / f"o{len(extra)}"
        r = sluice.run("caption", four, "-o", out, "--model", QWEN / "model.gguf",
                       "--mmproj", TINY / "mmproj.gguf", "-n", 4, "--metrics-addr", "off",
                       *extra, timeout=300)
        assert r.returncode == 2, r.stderr
        assert f"--mmproj '{TINY / 'mmproj.gguf'}' does not go with --model " \
            f"'{QWEN / 'model.gguf'}': token -1 of the prompt is not in the model's " \
            "vocabulary" in r.stderr, r.stderr
        assert not list(out.glob("part-*")), "no row may be written"
    r = sluice.run("caption", four, "-o", tmp_path / "qwen", "--model", QWEN / "model.gguf",
                   "--mmproj", QWEN / "mmproj.gguf", "-n", 4, "--ctx", 1024,
                   "--metrics-addr", "off", timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_prompt_holding_the_image_marker_fails_saying_so(sluice, four, tmp_path):
    """libmtmd takes '<__media__>' in the text for an image: a prompt (or a
    task's) holding it failed each row as "the vision preprocessor rejected
    the 512x512 px image, as shrunk (too small or too narrow ...)", and a
    --system holding it stopped the job with exit 1 saying the model
    "cannot tokenize a test prompt". Now a prompt every row sends (--prompt,
    a task's, --system) stops the job with exit 2 naming it and the marker;
    a prompt from a row's column fails that row alone, naming the marker,
    and --image-placeholder '<__media__>' still places the images there."""
    marker = "'<__media__>', the marker the engine puts where an image goes"
    for name, flags, who in (("p", ("--prompt", "Is <__media__> here?"), "the prompt (--prompt)"),
                             ("t", ("--task", "t=And <__media__>?"), "the prompt of task 't'")):
        r = sluice.caption(four, tmp_path / name, "-n", 4, *flags, "--metrics-addr", "off")
        assert r.returncode == 2, r.stderr
        assert f"{who} holds {marker}" in r.stderr, r.stderr
        assert not list((tmp_path / name).glob("part-*")), "no row may be written"
    # Where --image-placeholder is the marker, the prompt places the images.
    r = sluice.caption(four, tmp_path / "ph", "-n", 4, "--prompt", "Is <__media__> here?",
                       "--image-placeholder", "<__media__>", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{i}", "image": str(p.resolve()),
                                            "prompt": "Is <__media__> here?"}) + "\n"
                                for i, p in enumerate(sorted(four.iterdir()))))
    r = sluice.caption(manifest, tmp_path / "col", "-n", 4, "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    rows = read_rows(tmp_path / "col")
    assert len(rows) == 4
    for row in rows:
        assert row["error"].startswith(f"{row['id']}: the prompt holds {marker}"), row
    r = sluice.caption(four, tmp_path / "s", "-n", 4, "--system", "See <__media__>.",
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert f"the system prompt holds {marker}" in r.stderr, r.stderr
    assert not list((tmp_path / "s").glob("part-*")), "no row may be written"


def test_image_token_limits_out_of_range_are_named(sluice, four, tmp_path):
    """--image-min-tokens / --image-max-tokens the projector cannot take
    stop the job naming the flag, not the file: a maximum under Qwen's 8
    tokens was "--mmproj ...: libmtmd cannot load it as a vision projector",
    a minimum over the maximum the same, and a minimum of 100000 tokens an
    image was told to lower --max-tokens or --max-image-edge."""
    def run(name, *flags):
        r = sluice.run("caption", four, "-o", tmp_path / name, "--model", QWEN / "model.gguf",
                       "--mmproj", QWEN / "mmproj.gguf", "-n", 4, "--metrics-addr", "off",
                       *flags, timeout=300)
        assert r.returncode == 2, r.stderr
        assert not list((tmp_path / name).glob("part-*")), "no row may be written"
        return r.stderr
    err = run("max1", "--image-max-tokens", 1)
    assert "--image-max-tokens 1: outside what --mmproj" in err, err
    assert "(llama.cpp: image_max_pixels (784) is less than image_min_pixels (6272))" in err, err
    assert err.count("image_max_pixels (784) is less than image_min_pixels (6272)") == 1, err
    err = run("minmax", "--image-min-tokens", 100, "--image-max-tokens", 10)
    assert "--image-min-tokens 100 is above --image-max-tokens 10" in err, err
    err = run("huge", "--image-min-tokens", 100000, "--image-max-tokens", 200000)
    assert "lower --max-tokens, --max-image-edge or --image-min-tokens" in err, err


def test_a_row_past_the_model_context_under_ctx_is_not_told_to_raise_ctx(sluice, four,
                                                                         tmp_path):
    """Under --ctx a row that needs more than a sequence is told to give a
    larger --ctx, unless it needs more than the model's context (2048):
    max_tokens 100000 was told "give --ctx 100055 or more". A max_tokens
    the model's whole context cannot hold stops the job at load (exit 2),
    as without --ctx: it failed every row alone."""
    r = sluice.caption(four, tmp_path / "n", "-n", 100000, "--ctx", 512, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "max_tokens 100000 is not less than the model's context of 2048 positions, which " \
        "also holds the prompt: every request would fail; lower --max-tokens" in r.stderr, r.stderr
    assert not list((tmp_path / "n").glob("part-*")), "no row may be written"
    r = sluice.caption(four, tmp_path / "o", "-n", 2040, "--ctx", 512, "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    for row in read_rows(tmp_path / "o"):
        assert "more than the model's context of 2048: lower its max_tokens" in row["error"], row
    r = sluice.caption(four, tmp_path / "p", "-n", 1000, "--ctx", 512, "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    for row in read_rows(tmp_path / "p"):
        assert "more than the 512 positions of a sequence (--ctx): give --ctx 10" in row["error"]


def test_a_tasks_max_tokens_past_the_context_is_named(sluice, four, tmp_path):
    """A task's own max_tokens sizes the context as --max-tokens does: a
    task of 100000 tokens (the model's context is 2048) passed the
    load-time check, sized for the job's -n, and then failed every row
    (exit 3) where the same -n stopped the job (exit 2). A task of choices
    still takes one position, and a short task beside it still runs."""
    r = sluice.caption(four, tmp_path / "long", "--task", "a=What is it?", "--task",
                       "b=Describe it.", "--task-max-tokens", "b=100000", "-n", 4,
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "max_tokens: 100000), more than the model's context" in r.stderr, r.stderr
    assert not list((tmp_path / "long").glob("part-*")), "no row may be written"
    r = sluice.caption(four, tmp_path / "ctx", "--task", "a=What is it?", "--task",
                       "b=Describe it.", "--task-max-tokens", "b=100000", "-n", 4, "--ctx", 512,
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "max_tokens 100000 (of the prompt of task 'b') is not less than the model's " \
        "context of 2048" in r.stderr and "lower it" in r.stderr, r.stderr
    r = sluice.caption(four, tmp_path / "short", "--task", "a=What is it?",
                       "--task-max-tokens", "a=3", "-n", 4, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "short")
    assert len(rows) == 4 and all(row["a"] is not None for row in rows), rows


def test_each_task_is_sized_with_its_own_prompt_and_max_tokens(sluice, four, tmp_path):
    """Each task is a sequence of its own: a task of a 1,500-token prompt
    and 4 tokens beside one of a short prompt and 1,500 tokens each fit the
    model's context (2048), but the load-time check sized the longest
    prompt with the largest max_tokens (3,112 positions) and refused the
    job (exit 2). Now each task is sized on its own: the job runs; a task
    whose own prompt and max_tokens do not fit is still named."""
    long = "word " * 500  # 1,501 tokens
    r = sluice.caption(four, tmp_path / "fit", "--task", f"a={long}", "--task", "b=Hi",
                       "--task-max-tokens", "a=4", "--task-max-tokens", "b=1500", "--limit", 1,
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "fit")
    assert len(rows) == 1 and rows[0]["error"] is None, rows
    assert rows[0]["a_prompt_tokens"] > 1500 and rows[0]["a_finish_reason"] == "length", rows
    r = sluice.caption(four, tmp_path / "big", "--task", f"a={long}", "--task", "b=Hi",
                       "--task-max-tokens", "a=600", "--task-max-tokens", "b=4",
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert re.search(r"of which the prompt of task 'a' takes 15\d\d, max_tokens: 600\), more than "
                     r"the model's context of 2048: shorten the prompt of task 'a'", r.stderr), \
        r.stderr
    assert not list((tmp_path / "big").glob("part-*")), "no row may be written"
    # A task's own system prompt is in each of its requests: one past the
    # context failed every row, each told to lower its max_tokens (of 4).
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "What is it?", "system": "word " * 900},
                                 "b": {"prompt": "Hi"}}))
    r = sluice.caption(four, tmp_path / "sys", "--tasks", tasks, "-n", 4, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert re.search(r"of which the system prompt of task 'a' takes 27\d\d, max_tokens: 4\), more "
                     r"than the model's context of 2048: shorten the system prompt of task 'a', "
                     "lower --max-tokens", r.stderr), r.stderr
    assert not list((tmp_path / "sys").glob("part-*")), "no row may be written"


def test_a_prompt_past_the_context_stops_the_job_naming_it(sluice, four, tmp_path):
    """A --prompt longer than the model's context (2048) is in every
    request: each row failed on its own, told to lower its max_tokens (of
    4), exit 3. The load-time check was sized with a probe prompt of its
    own; now with the longest prompt every row sends (--prompt, a task's,
    a job file's), so the job stops with exit 2 naming it and its tokens
    (a job file's by its key).
    A max_tokens past the context is not blamed on a short prompt."""
    long = "word " * 2500
    def refused(name, *flags, run=None):
        r = run() if run else sluice.caption(four, tmp_path / name, "-n", 4,
                                             "--metrics-addr", "off", *flags)
        assert r.returncode == 2, r.stderr
        assert not list((tmp_path / name).glob("part-*")), "no row may be written"
        return r.stderr
    for name, flags, who in (("p", ("--prompt", long), "the prompt (--prompt)"),
                             ("t", ("--task", "a=What is it?", "--task", f"b={long}"),
                              "the prompt of task 'b'")):
        err = refused(name, *flags)
        m = re.search(rf"of which {re.escape(who)} takes (\d+), max_tokens: 4\), more than "
                      rf"the model's context of 2048: shorten {re.escape(who)}, lower "
                      "--max-tokens", err)
        assert m and int(m.group(1)) > 2048, err
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"prompt": {"text": long}, "sampling": {"max_tokens": 4},
                               "llama": {"model": str(TINY / "model.gguf"),
                                         "mmproj": str(TINY / "mmproj.gguf")},
                               "metrics": {"addr": "off"}}))
    err = refused("job", run=lambda: sluice.run("run", job, four, "-o", tmp_path / "job"))
    # a job file's settings named by their keys, at the prompt's line
    assert f"{job}:1:" in err and "of which the prompt (prompt.text) takes" in err, err
    assert "lower sampling.max_tokens" in err, err
    err = refused("n", "-n", 100000)
    assert "shorten" not in err and "lower --max-tokens" in err, err


def test_a_ctx_past_the_models_training_is_warned_of(sluice, four, tmp_path):
    """--ctx 4096 with a model trained on 2048 positions was taken with only
    llama.cpp's "n_ctx_seq (4096) > n_ctx_train (2048) -- possible training
    context overflow", which names neither the flag nor the risk: a row
    that needs more than 2048 is answered past the model's training. It
    still runs (as llama.cpp does), with a warning naming both numbers and
    the flag, llama.cpp's line kept for -v; a --ctx within the training
    says nothing."""
    for ctx, warned in ((4096, True), (2048, False)):
        r = sluice.caption(four, tmp_path / f"o{ctx}", "--ctx", ctx, "-n", 2, "--limit", 1,
                           "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        said = f"--ctx {ctx} is more than the 2048 positions" in r.stderr
        assert said == warned and ("trained for" in r.stderr) == warned, r.stderr
        assert "training context overflow" not in r.stderr, r.stderr


def test_a_kv_cache_larger_than_the_memory_stops_the_job(sluice, four, tmp_path):
    """--ctx and --parallel whose KV cache the machine cannot hold (--ctx
    100000 --parallel 200: 20 GiB of the tiny model's cache on a 23 GiB
    machine) were made anyway: llama.cpp allocated and cleared it page by
    page, and the run hung for minutes with the machine's memory. Now exit
    2 naming the size and the memory before anything is allocated. The run
    is capped at 8 GiB of address space (not under a sanitizer, which
    reserves more), so that a regression fails here rather than taking
    the machine."""
    def cap():
        if not sanitized():
            resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    out = tmp_path / "o"
    r = subprocess.run([str(sluice.binary), "caption", str(four), "-o", str(out), "--model",
                        str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                        "--ctx", "4194304", "--parallel", "255", "-n", "2",
                        "--metrics-addr", "off"],
                       capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert r.returncode == 2, r.stderr
    assert re.search(r"the KV cache of 4194304 positions per sequence x 256 sequences would "
                     r"take 1024\.0 GiB, more than three quarters of this machine's [0-9.]+ GiB "
                     r"of memory: lower --ctx or --parallel", r.stderr), r.stderr
    assert not list(out.glob("part-*")), "no row may be written"


def test_a_stop_cancels_loading_the_model(sluice, four, tmp_path):
    """Ctrl-C while llama.cpp loads the model cancels the load (its progress
    callback says so): the run went on until the model had loaded, minutes
    for a large one on a network file system. Here each of the tiny model's
    41 tensors takes 0.25 s (the fault point engine.load), 10 s in all."""
    env = dict(os.environ, SLUICE_TEST_FAULTS="engine.load=sleep:250")
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([str(sluice.binary), "caption", str(four), "-o", str(tmp_path / "out"),
                                 "--model", str(TINY / "model.gguf"), "--mmproj",
                                 str(TINY / "mmproj.gguf"), "--metrics-addr", "off"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    rc, took = interrupt_when_said(proc, err_path, "test fault point engine.load")
    log = err_path.read_text()
    assert rc == 130, log
    assert took < 4, f"{took:.1f} s from the stop request to the exit: {log}"
    assert f"stopped on request while loading --model '{TINY / 'model.gguf'}'" in log, log


def test_a_cpu_without_the_builds_simd_extensions_is_refused_by_name(sluice, four, tmp_path):
    """A llama.cpp built with GGML_NATIVE uses its build machine's SIMD
    extensions; a prefix carried to a CPU without one died of SIGILL in
    libggml-cpu naming nothing. sluice compares this CPU's flags (here a
    test's stand-in, SLUICE_TEST_CPU_FLAGS) with the build's first: exit 2
    naming what is missing, before the output folder is made. A job that
    loads no model (--dry-run, the openai engine) is not checked."""
    have = native_flags()
    if "avx2" not in have:
        pytest.skip("this llama.cpp is not a GGML_NATIVE build on an AVX2 CPU")
    lacking = [f for f in have if f not in ("avx2", "fma")]
    env = dict(os.environ, SLUICE_TEST_CPU_FLAGS=" ".join(lacking))

    def caption(out, *extra, env=env):
        return subprocess.run([str(sluice.binary), "caption", str(four), "-o", str(out),
                               "--model", str(TINY / "model.gguf"), "--mmproj",
                               str(TINY / "mmproj.gguf"), "-n", "4", "--metrics-addr", "off",
                               *extra], env=env, capture_output=True, text=True, timeout=300)

    r = caption(tmp_path / "old")
    assert r.returncode == 2, r.stderr
    missing = ", ".join(f for f in have if f in ("avx2", "fma"))  # in the build's order
    assert "was built for the CPU of the machine that built it (GGML_NATIVE) and may use " \
        f"{missing}, which this CPU ({socket.gethostname()}) lacks: it would stop on an " \
        "illegal instruction" in r.stderr, \
        r.stderr
    assert "SLUICE_TEST_CPU_FLAGS is set" in r.stderr, r.stderr
    assert not (tmp_path / "old").exists()
    assert "SLUICE_CPU_CHECK=off skips this check" in r.stderr, r.stderr
    r = caption(tmp_path / "dry", "--dry-run")
    assert r.returncode == 0, r.stderr
    # A kernel too old to list an extension the CPU has: the user turns
    # the check off (said on stderr), and the run goes on (this CPU has them).
    r = caption(tmp_path / "off", env=dict(env, SLUICE_CPU_CHECK="off"))
    assert r.returncode == 0, r.stderr
    assert "SLUICE_CPU_CHECK=off: this CPU is not checked" in r.stderr, r.stderr
    env["SLUICE_TEST_CPU_FLAGS"] = " ".join(have)
    r = caption(tmp_path / "same")
    assert r.returncode == 0, r.stderr
    assert len(read_rows(tmp_path / "same")) == len(list(four.iterdir()))


def test_config_check_refuses_a_cpu_the_run_refuses(sluice, four, tmp_path):
    """config check said ok (exit 0) to a job on a CPU that its run then
    refused at once (exit 2, naming the SIMD extensions missing): it checks
    the CPU too now, where the run would load a model (the llama engine,
    not a dry run), with the run's message and exit status. This CPU's
    flags are a test's stand-in (SLUICE_TEST_CPU_FLAGS) without avx2."""
    have = native_flags()
    if "avx2" not in have:
        pytest.skip("this llama.cpp is not a GGML_NATIVE build on an AVX2 CPU")
    env = dict(os.environ, SLUICE_TEST_CPU_FLAGS=" ".join(f for f in have if f != "avx2"))
    job = tmp_path / "job.yaml"
    job.write_text(f"input:\n  paths: [{json.dumps(str(four))}]\n"
                   f"output:\n  dir: {json.dumps(str(tmp_path / 'out'))}\n"
                   f"llama:\n  model: {json.dumps(str(TINY / 'model.gguf'))}\n"
                   f"  mmproj: {json.dumps(str(TINY / 'mmproj.gguf'))}\n"
                   "metrics:\n  addr: 'off'\n")

    def run(*args, env=env):
        return subprocess.run([str(sluice.binary), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300)

    said = f"may use avx2, which this CPU ({socket.gethostname()}) lacks: it would stop on an " \
        "illegal instruction"
    check, started = run("config", "check", job), run("run", job)
    assert started.returncode == 2 and said in started.stderr, started.stderr
    assert check.returncode == 2 and said in check.stderr, (check.stdout, check.stderr)
    refusal = [l for l in started.stderr.splitlines() if said in l]
    assert refusal == [l for l in check.stderr.splitlines() if said in l], check.stderr
    assert not (tmp_path / "out").exists()
    # what loads no model is not checked, as the run does not; nor is the check turned off
    for flags, extra_env in [(("--dry-run",), {}), (("--engine", "openai", "--endpoint",
                                                     "http://127.0.0.1:9"), {}),
                             ((), {"SLUICE_CPU_CHECK": "off"}),
                             ((), {"SLUICE_TEST_CPU_FLAGS": " ".join(have)})]:
        r = run("config", "check", job, *flags, env=dict(env, **extra_env))
        assert r.returncode == 0 and r.stdout == f"{job}: ok\n", (flags, r.stdout, r.stderr)


# Instructions a compiler emits without intrinsics under -march=native, by
# the /proc/cpuinfo flag of the extension each needs (Intel's SDM, AMD's APM).
NEEDS_FLAG = {r"vgf2p8\w+": "gfni", r"vaes\w+": "vaes", r"vpclmul\w+": "vpclmulqdq",
              r"lzcnt": "abm", r"(andn|bextr|blsi|blsmsk|blsr|tzcnt)": "bmi1",
              r"(bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx)": "bmi2", r"movbe": "movbe",
              r"vfmadd\w+": "fma", r"vcvtph2ps|vcvtps2ph": "f16c"}


def test_the_cpu_check_names_every_extension_the_build_uses(sluice):
    """What the check compares must cover every extension whose
    instructions libggml-cpu holds, not only the AVX family: GCC's
    -march=native code on an AVX-512 machine uses GFNI (vgf2p8affineqb for
    vector byte shifts), BMI1 and LZCNT too, which the list left out, so a
    CPU (or a VM) without GFNI passed the check and could stop on an
    illegal instruction. The instructions are read with objdump from the
    libggml-cpu sluice runs; each extension they need is in the build's
    SL_LLAMA_CPU_FLAGS."""
    have = native_flags()
    if "avx2" not in have:
        pytest.skip("this llama.cpp is not a GGML_NATIVE build on an AVX2 CPU")
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    header = pathlib.Path(sluice.binary).parent / "generated" / "llama_build.h"
    if not header.is_file():
        pytest.skip(f"{header} is not there (an installed sluice)")
    built = re.search(r'SL_LLAMA_CPU_FLAGS "([^"]*)"', header.read_text()).group(1).split()
    lib = next((pathlib.Path(os.environ["SLUICE_LLAMA_PREFIX"]) / "lib").glob("libggml-cpu.so*"))
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True,
                          text=True, check=True, timeout=300).stdout
    mnemonics = {m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:\s+(\S+)", text, re.M)}
    needed = {flag: sorted(m for m in mnemonics if re.fullmatch(rx, m))
              for rx, flag in NEEDS_FLAG.items()}
    missing = {flag: used[:3] for flag, used in needed.items() if used and flag not in built}
    assert not missing, (missing, built)


def test_no_simd_code_runs_before_the_cpu_check(sluice, four, tmp_path):
    """The refusal above is only worth it if no code of libggml-cpu runs
    before it: that code (ggml_cpu_init first, which the backend registry
    calls the first time anything counts ggml's devices) is what would stop
    on an illegal instruction. Here a preloaded ggml_cpu_init raises SIGILL
    as an older CPU would: with the build's flags the run dies of it (the
    stand-in is reached), and without avx2 each command is refused or runs
    without it (a job file, a grammar and a JSON schema parsed, a batch,
    config check; a dry run, --version, config check of a dry run). A
    guard: it passes; it fails when a command counts the devices first
    (sl_llama_default_parallel)."""
    have = native_flags()
    if "avx2" not in have:
        pytest.skip("this llama.cpp is not a GGML_NATIVE build on an AVX2 CPU")
    if sanitized():
        pytest.skip("ASan's runtime must be the first library: nothing may be preloaded")
    shim = tmp_path / "ill.so"
    (tmp_path / "ill.c").write_text("#include <signal.h>\n"
                                    "void ggml_cpu_init(void) { raise(SIGILL); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "ill.c")],
                   check=True, timeout=120)
    env = dict(os.environ, LD_PRELOAD=str(shim), SLUICE_TEST_CPU_FLAGS=" ".join(have))
    model = ["--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
             "--metrics-addr", "off", "-n", "4"]

    def run(*args):
        return subprocess.run([str(sluice.binary), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300)

    r = run("caption", four, "-o", tmp_path / "fits", *model)
    assert r.returncode in (-4, 128 + 4), (r.returncode, r.stderr[-2000:])
    env["SLUICE_TEST_CPU_FLAGS"] = " ".join(f for f in have if f != "avx2")
    (tmp_path / "g.gbnf").write_text('root ::= "a" | "b"\n')
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    (tmp_path / "job.yaml").write_text(
        f"input:\n  paths: [{json.dumps(str(four))}]\n"
        f"llama:\n  model: {json.dumps(str(TINY / 'model.gguf'))}\n"
        f"  mmproj: {json.dumps(str(TINY / 'mmproj.gguf'))}\n  parallel: 0\n")
    (tmp_path / "batch.jsonl").write_text(json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}) + "\n")
    refused = [("caption", four, "-o", tmp_path / "a", *model),
               ("caption", four, "-o", tmp_path / "b", *model, "--grammar", tmp_path / "g.gbnf"),
               ("caption", four, "-o", tmp_path / "c", *model, "--json-schema",
                tmp_path / "s.json", "--parallel", "0", "--gpu-layers", "99"),
               ("run", tmp_path / "job.yaml", "-o", tmp_path / "d", "--metrics-addr", "off"),
               ("batch", tmp_path / "batch.jsonl", "-o", tmp_path / "e", "--model",
                TINY / "model.gguf", "--metrics-addr", "off"),
               ("config", "check", tmp_path / "job.yaml", "-o", tmp_path / "g")]
    for args in refused:
        r = run(*args)
        assert r.returncode == 2 and "which this CPU (" in r.stderr, (args, r.stderr[-2000:])
    for args in [("caption", four, "-o", tmp_path / "f", *model, "--dry-run"), ("--version",),
                 ("config", "check", tmp_path / "job.yaml", "-o", tmp_path / "h", "--dry-run")]:
        r = run(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
