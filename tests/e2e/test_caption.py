"""sluice caption end to end: every input once, errors as rows, determinism,
and clear failures for a wrong command line."""
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (LOSSLESS, SAMPLES, TINY, BackgroundRun, assert_llama_mtmd_cli_agrees,
                      lossless_inputs, read_rows, sample_copies, sample_images,
                      sanitized)
from openai_helpers import metric_sum, scrape

BROKEN = {"broken/zero-bytes.jpg", "broken/truncated.jpg", "broken/text.png"}


def test_every_input_once_and_corrupt_inputs_as_error_rows(sluice, corrupt_set, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(corrupt_set, out, "--max-tokens", "12", "--ordered")
    assert r.returncode == 3, r.stderr  # finished, some rows failed
    rows = read_rows(out)
    ids = [row["id"] for row in rows]
    expected = {str(p.relative_to(SAMPLES)) for p in sample_images()} | BROKEN
    assert len(ids) == len(set(ids)), "an input was written twice"
    assert set(ids) == expected
    assert ids == sorted(ids), "--ordered writes rows in input (sorted path) order"
    for row in rows:
        if row["id"] in BROKEN:
            assert row["caption"] is None
            assert row["error_stage"] == "decode"
            assert row["id"] in row["error"], row["error"]  # the message names the file
        else:
            assert row["error"] is None, row["error"]
            assert isinstance(row["caption"], str)
            assert row["finish_reason"] in ("stop", "length")
            assert 0 <= row["generated_tokens"] <= 12
            assert row["prompt_tokens"] > 0
            assert max(row["width"], row["height"]) <= 512
            assert row["model"] == "sluice-tiny-random"
    assert "zero-bytes.jpg failed (decode)" in r.stderr and "empty" in r.stderr
    assert "3 failed" in r.stdout
    assert not any(p.name.startswith(".") for p in out.iterdir()), "temporary shard left behind"


def test_errors_file_takes_the_failed_rows_out_of_the_output(sluice, corrupt_set, tmp_path):
    """--errors-file: the output holds the good rows only, the file exactly the
    failed ones (the output's columns, JSONL, even for a Parquet output with
    image bytes); a rerun adds nothing and another setting is refused."""
    pq = pytest.importorskip("pyarrow.parquet")
    out, errs = tmp_path / "out", tmp_path / "errors.jsonl"
    args = ["--max-tokens", "4", "--errors-file", errs, "--shard-rows", "4", "--format",
            "parquet", "--include-image-bytes", "--metrics-addr", "off", "--show", "0"]
    r = sluice.caption(corrupt_set, out, *args)
    assert r.returncode == 3, r.stderr
    good = [row for part in sorted(out.glob("part-*.parquet"))
            for row in pq.read_table(part).to_pylist()]
    want_good = {str(p.relative_to(SAMPLES)) for p in sample_images()}
    assert sorted(row["id"] for row in good) == sorted(want_good)
    assert all(row["error"] is None and row["image_bytes"] for row in good)
    failed = [json.loads(line) for line in errs.read_text().splitlines()]
    assert sorted(row["id"] for row in failed) == sorted(BROKEN)
    for row in failed:
        assert row["caption"] is None and row["error_stage"] == "decode"
        assert row["id"] in row["error"]
        assert "image_bytes" not in row
    # Parts of four rows: the failed rows came from more than one part.
    assert len(list(out.glob("errors-*.jsonl"))) >= 1
    before = errs.read_bytes()
    r = sluice.caption(corrupt_set, out, *args)
    # nothing left to do; exit 3 as the folder's errors parts hold failed rows
    assert r.returncode == 3 and "nothing new written" in r.stdout, r.stderr
    assert errs.read_bytes() == before
    r = sluice.caption(corrupt_set, out, *[a for a in args if a not in ("--errors-file", errs)])
    assert r.returncode == 2 and "errors_file" in r.stderr, r.stderr


def test_an_errors_part_whose_part_is_gone_is_removed(sluice, corrupt_set, tmp_path):
    """A part's failed rows (--errors-file) are in errors-N.jsonl beside
    part-N. When part-N is not there — deleted by hand to have its rows made
    again (docs/output.md), or never renamed: under MPI a rank killed
    between the errors part's rename and its part's — the rerun writes those
    rows again, and the old errors-N.jsonl stayed: `out/errors-*.jsonl`
    held them twice (the errors file read the committed parts' alone). The
    rerun removes it."""
    out, errs = tmp_path / "out", tmp_path / "errors.jsonl"
    args = ["--dry-run", "--errors-file", errs, "--shard-rows", "2", "--ordered",
            "--metrics-addr", "off"]
    r = sluice.caption(corrupt_set, out, *args)
    assert r.returncode == 3, r.stderr
    numbers = sorted(p.name[7:12] for p in out.glob("errors-*.jsonl"))
    assert numbers, "no errors part"
    (out / f"part-{numbers[0]}.jsonl").unlink()
    r = sluice.caption(corrupt_set, out, *args)
    assert r.returncode == 3, r.stderr
    assert not (out / f"errors-{numbers[0]}.jsonl").exists()
    failed = [json.loads(line)["id"] for part in sorted(out.glob("errors-*.jsonl"))
              for line in part.read_text().splitlines()]
    assert sorted(failed) == sorted(BROKEN)
    assert sorted(json.loads(line)["id"] for line in errs.read_text().splitlines()) == \
        sorted(BROKEN)


def test_errors_file_temporary_is_the_runs_own(sluice, corrupt_set, tmp_path):
    """Two runs (other output folders) given one --errors-file: each writes
    FILE under a temporary name of its own, so neither truncates nor renames
    away the other's (the name FILE.tmp, once shared, stands here for the
    other run's temporary), and none is left behind."""
    errs = tmp_path / "errors.jsonl"
    other = tmp_path / "errors.jsonl.tmp"
    other.write_text("the other run's rows, half written\n")
    for out in (tmp_path / "a", tmp_path / "b"):
        r = sluice.caption(corrupt_set, out, "--max-tokens", "4", "--errors-file", errs,
                           "--metrics-addr", "off", "--show", "0")
        assert r.returncode == 3, r.stderr
        assert sorted(json.loads(x)["id"] for x in errs.read_text().splitlines()) == \
            sorted(BROKEN)
    assert other.read_text() == "the other run's rows, half written\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("errors")) == \
        ["errors.jsonl", "errors.jsonl.tmp"]


def test_clean_inputs_exit_zero(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "out", "--max-tokens", "4", "--show", "2")
    assert r.returncode == 0, r.stderr
    n = len(sample_images())
    assert f"{n} images: {n} captioned, 0 failed" in r.stdout
    assert f"... and {n - 2} more captions\n" in r.stdout, r.stdout
    assert len(read_rows(tmp_path / "out")) == n
    # --show 0 asks for no captions: no "... and N more" for them either
    r = sluice.caption(SAMPLES, tmp_path / "none", "--max-tokens", "4", "--show", "0")
    assert r.returncode == 0 and f"{n} images: {n} captioned" in r.stdout, r.stderr
    assert "more captions" not in r.stdout, r.stdout


def test_terminal_lines_defang_what_the_data_holds(sluice, tmp_path):
    """Ids, captions and errors come from the data: printed, an ESC there
    would recolour, retitle or redraw the user's terminal. Control bytes and
    C1 controls go out as escapes, an id past 96 bytes is cut, and the
    output keeps them whole."""
    img = sorted(SAMPLES.glob("*.jpg"))[0]
    ids = {"red": "r\x1b[31mRED\x1b[0m\x07", "title": "t\x1b]0;TITLE\x07\u009b2J",
           "long": "L" * 500, "bidi": "photo\u202egpj.exe \u2066\u2069 \u00e9\u732b"}
    rows = [{"id": ids["red"], "image": str(img)}, {"id": ids["long"], "image": str(img)},
            {"id": ids["bidi"], "image": str(img)},
            {"id": ids["title"], "image": str(tmp_path / "missing.jpg")}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = sluice.caption(manifest, tmp_path / "out", "--max-tokens", "4", "--metrics-addr", "off",
                       "--show", "5")
    assert r.returncode == 3, r.stderr
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\x07\u009b\u202e\u2066\u2069"), repr(text)
    assert "r\\x1B[31mRED\\x1B[0m\\x07 " in r.stdout, r.stdout
    # A right-to-left override reordered the rest of the line on terminals
    # that lay out bidirectional text; other characters past ASCII stay.
    assert "photo\\u202Egpj.exe \\u2066\\u2069 \u00e9\u732b " in r.stdout, r.stdout
    assert "t\\x1B]0;TITLE\\x07\\u009B2J failed (decode)" in r.stderr, r.stderr
    assert "L" * 96 + "\u2026 (404 bytes more)" in r.stdout, r.stdout
    assert "L" * 97 not in r.stdout
    assert {row["id"] for row in read_rows(tmp_path / "out")} == set(ids.values())
    # A fatal error naming a command-line input, defanged as well.
    r = sluice.caption(tmp_path / "no\x1b[2Jsuch", tmp_path / "out2", "--metrics-addr", "off")
    assert r.returncode == 2 and "\x1b" not in r.stderr, repr(r.stderr)
    assert "no\\x1B[2Jsuch" in r.stderr, r.stderr


def test_greedy_captions_are_identical_across_runs(sluice, tmp_path):
    # Bit-exact reruns need --parallel 1: with more sequences the batch
    # composition varies with timing, and llama.cpp's batched sums can flip
    # a near-tie (tests/unit/test_engine.c checks that that is all it does).
    a = sluice.caption(SAMPLES, tmp_path / "a", "--max-tokens", "16", "--parallel", "1")
    b = sluice.caption(SAMPLES, tmp_path / "b", "--max-tokens", "16", "--parallel", "1")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    caps_a = {r["id"]: r["caption"] for r in read_rows(tmp_path / "a")}
    caps_b = {r["id"]: r["caption"] for r in read_rows(tmp_path / "b")}
    assert caps_a == caps_b
    assert any(c for c in caps_a.values()), "the model generated nothing at all"


def test_every_sampler_gives_the_same_greedy_captions(sluice, tmp_path):
    # --parallel 1: the same batches, so the same logits, whoever picks the token
    caps = {}
    for where in ("reference", "host", "device"):
        r = sluice.caption(SAMPLES, tmp_path / where, "--max-tokens", "16", "--parallel", "1",
                           "--sampler", where)
        assert r.returncode == 0, r.stderr
        caps[where] = {row["id"]: row["caption"] for row in read_rows(tmp_path / where)}
    assert caps["host"] == caps["reference"] == caps["device"]
    bad = sluice.caption(SAMPLES, tmp_path / "bad", "--sampler", "gpu")
    assert bad.returncode == 2 and \
        "--sampler expects one of auto, host, device, reference; got 'gpu'" in bad.stderr


def test_sampling_seed_reproduces_and_changes_captions(sluice, tmp_path):
    args = ("--max-tokens", "16", "--temperature", "1.0", "--parallel", "1")
    a = sluice.caption(SAMPLES, tmp_path / "a", *args, "--seed", "1")
    b = sluice.caption(SAMPLES, tmp_path / "b", *args, "--seed", "1")
    c = sluice.caption(SAMPLES, tmp_path / "c", *args, "--seed", "2")
    assert a.returncode == b.returncode == c.returncode == 0
    rows_a, rows_b, rows_c = (sorted(read_rows(tmp_path / d), key=lambda r: r["id"]) for d in "abc")
    assert [(r["id"], r["seed"], r["caption"]) for r in rows_a] == \
           [(r["id"], r["seed"], r["caption"]) for r in rows_b]
    assert [r["caption"] for r in rows_a] != [r["caption"] for r in rows_c]
    assert len({r["seed"] for r in rows_a}) == len(rows_a), "each row has its own seed"


def test_wrong_model_path_fails_fast_and_clearly(sluice, tmp_path):
    t0 = time.monotonic()
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "out", "--model", "/nope/model.gguf",
                   "--mmproj", TINY / "mmproj.gguf")
    assert time.monotonic() - t0 < 10
    assert r.returncode == 2
    assert "--model '/nope/model.gguf'" in r.stderr and "No such file" in r.stderr
    assert not (tmp_path / "out" / "part-00000.jsonl").exists()


def test_not_a_model_is_a_clear_error(sluice, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a gguf")
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "out", "--model", fake,
                   "--mmproj", TINY / "mmproj.gguf")
    assert r.returncode == 2
    assert str(fake) in r.stderr and "cannot load" in r.stderr


def test_existing_output_is_not_overwritten_without_flag(sluice, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shard = out / "part-00000.jsonl"
    shard.write_text('{"keep": true}\n')
    r = sluice.caption(SAMPLES, out, "--max-tokens", "2")
    assert r.returncode == 2
    assert "--overwrite" in r.stderr
    assert shard.read_text() == '{"keep": true}\n'
    r = sluice.caption(SAMPLES, out, "--max-tokens", "2", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert len(read_rows(out)) == len(sample_images())


def test_command_line_errors_say_what_to_change(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "o", "--max-tokens", "lots")
    assert r.returncode == 2 and "--max-tokens expects" in r.stderr and "'lots'" in r.stderr
    r = sluice.caption(tmp_path / "missing", tmp_path / "o")
    assert r.returncode == 2 and str(tmp_path / "missing") in r.stderr
    r = sluice.run("caption", SAMPLES)
    assert r.returncode == 2 and "-o DIR" in r.stderr
    r = sluice.run("captoin")
    assert r.returncode == 2 and "unknown command 'captoin'" in r.stderr
    r = sluice.run("caption", "--help")
    assert r.returncode == 0 and "--max-image-edge" in r.stdout
    # A batch file's switches do nothing to a caption job: said, not ignored.
    for flag in ("--allow-local-images", "--ignore-model"):
        r = sluice.caption(SAMPLES, tmp_path / "o", flag)
        assert r.returncode == 2 and f"{flag} applies to a batch file" in r.stderr, r.stderr


def test_an_errors_file_that_cannot_be_written_stops_before_the_run(sluice, corrupt_set, tmp_path):
    """--errors-file is written when the run ends: a path there was no
    writing to failed only then (exit 1, after the whole run). It is checked
    first now, as -o is: exit 2, the file named, nothing run."""
    (tmp_path / "a-file").write_text("")
    for errs, why in ((tmp_path, "is a folder"), (tmp_path / "a-file" / "errors.jsonl", "cannot be written")):
        out = tmp_path / "out"
        r = sluice.caption(corrupt_set, out, "--max-tokens", "2", "--metrics-addr", "off",
                           "--errors-file", errs)
        assert r.returncode == 2, r.stderr
        assert str(errs if why == "is a folder" else errs.parent) in r.stderr and why in r.stderr, r.stderr
        assert "--errors-file" in r.stderr
        assert not list(out.glob("part-*")), "the run should not have started"
    # A folder that is not there yet is made, as -o's is.
    errs = tmp_path / "new" / "errors.jsonl"
    r = sluice.caption(corrupt_set, tmp_path / "out", "--max-tokens", "2", "--metrics-addr", "off",
                       "--errors-file", errs)
    assert r.returncode == 3, r.stderr
    assert len(errs.read_text().splitlines()) == len(BROKEN)


def test_gpus_are_checked_and_a_cpu_build_says_so(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "o", "--gpus", "0,0")
    assert r.returncode == 2 and "distinct device numbers" in r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "o", "--gpus", "0,1", "--replicas", "3")
    assert r.returncode == 2 and "one replica per GPU (2)" in r.stderr
    # This machine's llama.cpp is a CPU build: --gpus cannot be honoured.
    r = sluice.caption(SAMPLES, tmp_path / "o", "--gpus", "0", "--metrics-addr", "off")
    assert r.returncode == 2 and "sees no GPU device" in r.stderr and "SLUICE_LLAMA_CUDA" in r.stderr


def big_input(tmp_path, copies):
    """The samples, `copies` times over, as a larger input folder."""
    sample_copies(tmp_path / "big", copies)
    return tmp_path / "big"


def test_unordered_default_still_writes_every_row_once(sluice, tmp_path):
    src = big_input(tmp_path, 4)
    r = sluice.caption(src, tmp_path / "out", "--max-tokens", "4", "--decode-workers", "3")
    assert r.returncode == 0, r.stderr
    ids = [row["id"] for row in read_rows(tmp_path / "out")]
    assert len(ids) == len(set(ids)) == 4 * len(sample_images())


def test_too_many_failures_stop_the_job_and_keep_what_finished(sluice, tmp_path):
    src = tmp_path / "mostly-bad"
    src.mkdir()
    for i in range(60):
        (src / f"bad{i:02d}.jpg").write_bytes(b"not a jpeg")
    r = sluice.caption(src, tmp_path / "out", "--max-failed", "10%")
    assert r.returncode == 1, r.stderr
    assert "rows had failed" in r.stderr and "--max-failed" in r.stderr
    assert str(tmp_path / "out" / "part-00000.jsonl") in r.stderr  # where to look
    rows = read_rows(tmp_path / "out")
    assert rows and all(row["error_stage"] == "decode" for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    # With --errors-file the failed rows are in that file, not in a part:
    # the stop named the last part (which then held none) as where to look.
    errs = tmp_path / "errors.jsonl"
    r = sluice.caption(src, tmp_path / "out-errors", "--max-failed", "10%", "--shard-rows", "4",
                       "--metrics-addr", "off", "--errors-file", errs)
    assert r.returncode == 1, r.stderr
    stop = next(line for line in r.stderr.splitlines() if "rows had failed" in line)
    assert f"are in '{errs}' (--errors-file)" in stop and "part-" not in stop, stop
    failed = [json.loads(line) for line in errs.read_text().splitlines()]
    assert failed and all(row["error_stage"] == "decode" for row in failed)
    parts = list((tmp_path / "out-errors").glob("part-*.jsonl"))
    assert parts and not any(p.read_text() for p in parts)  # every row failed: none in a part


def test_a_stop_past_max_failed_says_whether_a_rerun_has_work(sluice, tmp_path):
    """The rows in flight at a --max-failed stop are finished and written;
    when they were the last, sluice said "run the same command again to go
    on from there" and the rerun found every input done. What the stop says
    now agrees with what the rerun finds, with few inputs (all in flight)
    and with many (the stop leaves most unread)."""
    for n_bad, n_ok in ((30, 10), (400, 0)):
        src = tmp_path / f"in-{n_bad}"
        src.mkdir()
        for i in range(n_bad):
            (src / f"bad{i:03d}.jpg").write_bytes(b"not a jpeg")
        for i, img in zip(range(n_ok), sample_images() * n_ok):
            (src / f"ok{i:02d}{img.suffix}").write_bytes(img.read_bytes())
        out = tmp_path / f"out-{n_bad}"
        args = ("--max-failed", "10%", "--max-tokens", "2")  # judged from the 20th row on
        r = sluice.caption(src, out, *args)
        assert r.returncode == 1 and "--max-failed" in r.stderr, r.stderr
        said_done = "every input is done" in r.stderr
        assert said_done != ("run the same command again" in r.stderr), r.stderr
        again = sluice.caption(src, out, *args)
        rerun_had_nothing = "all inputs were already done" in again.stdout
        assert said_done == rerun_had_nothing, (n_bad, r.stderr, again.stdout, again.stderr)
        if n_bad == 400:
            assert not said_done  # the stop left inputs unread


def interrupted_run(sluice, tmp_path, signals, timeout, sig=signal.SIGINT):
    """Captions 40 copies of the samples, sends `sig` `signals` times once a
    row is done (the run's metrics say so: a fixed delay is outrun on a
    loaded machine, leaving nothing in flight); returns the exit status,
    stderr and the rows written (None: no file)."""
    src = big_input(tmp_path, 40)
    with BackgroundRun(sluice, src, tmp_path / "out", "--max-tokens", "48", "--show", "0",
                       log_dir=tmp_path) as run:
        port = run.port()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.proc.poll() is None:
            try:
                if metric_sum(scrape(port), "sluice_rows_done_total") >= 1:
                    break
            except OSError:
                pass  # not serving yet
            time.sleep(0.1)
        for i in range(signals):
            if i:
                time.sleep(0.05)
            run.proc.send_signal(sig)
        rc = run.proc.wait(timeout=timeout)
        err = run.log(10**7)
    committed = (tmp_path / "out" / "part-00000.jsonl").exists()
    return rc, err, read_rows(tmp_path / "out") if committed else None


def test_sigint_finishes_rows_in_flight_and_keeps_them(sluice, tmp_path):
    rc, err, rows = interrupted_run(sluice, tmp_path, 1, timeout=120)
    assert rc == 130, err
    assert "stopped on request" in err
    # committed, every line complete JSON
    assert 0 < len(rows) < 40 * len(sample_images())
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(row["error"] is None for row in rows)


def test_second_sigint_stops_at_once(sluice, tmp_path):
    rc, err, rows = interrupted_run(sluice, tmp_path, 2, timeout=60)
    assert rc == 130, err
    assert "at once" in err
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.skipif(sanitized(), reason="the sanitizers report crashes their own way")
def test_a_crash_says_so_with_a_backtrace(sluice, tmp_path):
    rc, err, _ = interrupted_run(sluice, tmp_path, 1, timeout=60, sig=signal.SIGSEGV)
    assert rc == -signal.SIGSEGV, err
    assert "sluice: crashed (SIGSEGV); backtrace:" in err
    frames = err.split("backtrace:\n", 1)[1].splitlines()
    assert len(frames) >= 3 and any("sluice(" in f for f in frames), err


def test_memory_budget_and_pipeline_flags_are_checked(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "o", "--memory-budget", "lots")
    assert r.returncode == 2 and "--memory-budget expects" in r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "o", "--max-failed", "150%")
    assert r.returncode == 2 and "--max-failed expects" in r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "o", "--memory-budget", "64M", "--max-tokens", "4",
                       "--decode-workers", "1", "--replicas", "2")
    assert r.returncode == 0, r.stderr
    assert len(read_rows(tmp_path / "o")) == len(sample_images())
    assert "of 67 MB" in r.stdout  # the budget as reported


def test_parallel_sequences_and_replicas_write_every_row_once(sluice, tmp_path):
    src = big_input(tmp_path, 3)
    r = sluice.caption(src, tmp_path / "out", "--max-tokens", "24", "--parallel", "8",
                       "--replicas", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "out")
    assert len({row["id"] for row in rows}) == len(rows) == 3 * len(sample_images())
    # every row after the first few found the prompt head already computed
    assert sum(1 for row in rows if row["cached_tokens"] > 0) >= len(rows) - 2


def test_greedy_output_matches_llama_mtmd_cli(sluice, llama_prefix, tmp_path):
    src = lossless_inputs(tmp_path)
    r = sluice.caption(src, tmp_path / "out", "--max-image-edge", "0", "--max-tokens", "32",
                       "--parallel", "1")
    assert r.returncode == 0, r.stderr
    ours = {row["id"]: row["caption"] for row in read_rows(tmp_path / "out")}
    for name in LOSSLESS:
        base = pathlib.Path(name).name
        assert_llama_mtmd_cli_agrees(llama_prefix, TINY, src / base, ours[base],
                                     "Describe this image in one sentence.", 32)


def test_stop_strings_cut_captions(sluice, tmp_path):
    base = sluice.caption(SAMPLES, tmp_path / "a", "--max-tokens", "32", "--parallel", "1")
    assert base.returncode == 0, base.stderr
    full = {r["id"]: r["caption"] for r in read_rows(tmp_path / "a")}
    r = sluice.caption(SAMPLES, tmp_path / "b", "--max-tokens", "32", "--parallel", "1",
                       "--stop", "kitchen", "--stop", "never-generated")
    assert r.returncode == 0, r.stderr
    cut = {row["id"]: row for row in read_rows(tmp_path / "b")}
    with_stop = [k for k, text in full.items() if "kitchen" in text]
    assert with_stop, "the sample captions no longer contain the stop word: pick another"
    for k, text in full.items():
        if "kitchen" in text:
            assert cut[k]["caption"] == text[:text.index("kitchen")]
            assert cut[k]["finish_reason"] == "stop"
        else:
            assert cut[k]["caption"] == text


def test_progress_on_a_pipe_is_line_based_and_ends_with_the_totals(sluice, corrupt_set, tmp_path):
    r = sluice.caption(corrupt_set, tmp_path / "out", "--max-tokens", "24", "--progress-every", "0.05")
    assert r.returncode == 3, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("progress:")]
    assert lines, r.stderr
    assert "\033[" not in r.stderr  # no cursor movement when not on a terminal
    rows = read_rows(tmp_path / "out")
    failed = sum(1 for row in rows if row["error"])
    last = lines[-1]
    assert last.endswith("| finished")
    assert f"progress: {len(rows)} of {len(rows)} (100%) images done, {failed} failed," in last
    assert "ETA 0:00:00" in last
    assert f"read {len(rows)} " in last
    quiet = sluice.caption(SAMPLES, tmp_path / "q", "--max-tokens", "2", "--quiet",
                           "--progress-every", "0.05")
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr


def test_quiet_still_names_each_failed_row(sluice, corrupt_set, tmp_path):
    """--quiet is "print only errors": a failed row is one, and its line
    names the input and the cause. It printed nothing at all, so exit 3
    was the only sign that rows had failed, and of which."""
    r = sluice.caption(corrupt_set, tmp_path / "out", "--max-tokens", "2", "--quiet")
    assert r.returncode == 3, r.stderr
    failed = {row["id"]: row for row in read_rows(tmp_path / "out") if row["error"]}
    assert len(failed) >= 3, failed
    lines = r.stderr.splitlines()
    for rid, row in failed.items():
        assert f"sluice: {rid} failed ({row['error_stage']}): {row['error']}" in lines, r.stderr
    assert len(lines) == len(failed), r.stderr  # no progress, no other chatter
    assert r.stdout == "", r.stdout  # no captions, no summary


def test_parquet_output_matches_jsonl_and_reads_in_pyarrow_and_duckdb(sluice, corrupt_set, tmp_path):
    import duckdb
    import pyarrow.parquet as pq
    args = ("--max-tokens", "16", "--parallel", "1")
    a = sluice.caption(corrupt_set, tmp_path / "j", *args)
    b = sluice.caption(corrupt_set, tmp_path / "p", *args, "--format", "parquet")
    assert a.returncode == b.returncode == 3, b.stderr
    assert not (tmp_path / "p" / "part-00000.jsonl").exists()
    shard = tmp_path / "p" / "part-00000.parquet"
    table = pq.read_table(shard)
    assert table.schema.field("caption").type == "string"
    assert table.schema.field("generated_tokens").type == "int64"
    assert not table.schema.field("id").nullable
    by_id = {r["id"]: r for r in table.to_pylist()}
    rows = read_rows(tmp_path / "j")
    assert set(by_id) == {r["id"] for r in rows}
    for r in rows:
        p = by_id[r["id"]]
        for k in ("caption", "finish_reason", "prompt_tokens", "generated_tokens", "error_stage",
                  "error", "model", "seed", "path"):
            assert p[k] == r[k], (r["id"], k, p[k], r[k])
        assert p.get("width") == r.get("width")
    con = duckdb.connect()
    n, failed = con.execute(f"select count(*), count(error) from '{shard}'").fetchone()
    assert n == len(rows) and failed == sum(1 for r in rows if r["error"])
    # The folder itself, as a Ray Data or pandas user reads it: the run
    # report and metrics beside the part (read as Parquet files, and failed
    # on, while they were summary.json, report.html, metrics.prom) and
    # the ledger are skipped by their leading '_'.
    import pandas
    side = {p.name for p in (tmp_path / "p").iterdir() if not p.name.startswith("part-")}
    assert {"_summary.json", "_report.html", "_metrics.prom"} <= side, side
    assert pq.read_table(tmp_path / "p").num_rows == len(rows)
    assert sorted(pandas.read_parquet(tmp_path / "p")["id"]) == sorted(by_id)
    r = sluice.caption(SAMPLES, tmp_path / "x", "--format", "csv")
    assert r.returncode == 2 and "--format expects one of jsonl, parquet" in r.stderr


def test_a_rerun_removes_an_older_sluices_report_names(sluice, tmp_path):
    """A folder an older sluice wrote holds summary.json, report.html and
    metrics.prom (now _summary.json, ...): its rerun removes them as it
    writes the new ones, so pandas.read_parquet(folder) reads the rows."""
    import pandas
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / "variants" / "chelsea_thumb48.jpg", inputs / "a.jpg")
    out = tmp_path / "out"
    args = ("--format", "parquet", "--max-tokens", "2", "--metrics-addr", "off")
    assert sluice.caption(inputs, out, *args).returncode == 0
    # What every older sluice wrote there: its summary named its report,
    # its report had its title, its metrics sluice_'s names.
    older = {"summary.json": (out / "_summary.json").read_text().replace("_report.html", "report.html"),
             "report.html": (out / "_report.html").read_text(),
             "metrics.prom": (out / "_metrics.prom").read_text()}
    assert '"report.html"' in older["summary.json"]
    for old, text in older.items():
        (out / old).write_text(text)
    shutil.copy(SAMPLES / "variants" / "chelsea_thumb48.jpg", inputs / "b.jpg")
    r = sluice.caption(inputs, out, *args)
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in out.iterdir() if not p.name.startswith("part-"))
    assert left == ["_metrics.prom", "_report.html", "_sluice_ledger.sqlite", "_summary.json"], left
    assert sorted(pandas.read_parquet(out)["id"]) == ["a.jpg", "b.jpg"]
    # A user's own files by those names are not an older sluice's: they stay
    # (every run removed them, even in a new folder; found by helper rev17).
    mine = tmp_path / "mine"
    mine.mkdir()
    for old in older:
        (mine / old).write_text(f"the user's own {old}\n")
    assert sluice.caption(inputs, mine, *args).returncode == 0
    for old in older:
        assert (mine / old).read_text() == f"the user's own {old}\n"


def test_every_endpoints_file_is_kept(sluice, tmp_path):
    """Endpoints from two --endpoints-file flags are all used: the second
    file once freed the first one's text, which its endpoints pointed into
    (caught by ASan in the sanitizer build; here: both named)."""
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(f"# the first fleet\nhttp://127.0.0.1:{ports[0]}\nhttp://127.0.0.1:{ports[1]}\n")
    second.write_text(f"http://127.0.0.1:{ports[2]}\n")
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "out", "--engine", "openai",
                   "--endpoints-file", first, "--endpoints-file", second, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    for port in ports:  # none answers: the message names each endpoint
        assert f"http://127.0.0.1:{port}" in r.stderr, r.stderr


def test_a_prompt_that_is_not_utf8_is_a_usage_error(sluice, tmp_path):
    r = subprocess.run([str(sluice.binary), "caption", str(SAMPLES), "-o", str(tmp_path / "o"),
                        "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                        "--prompt", b"D\xe9cris l'image"], capture_output=True)
    assert r.returncode == 2
    assert b"not valid UTF-8 (--prompt)" in r.stderr
    assert not (tmp_path / "o" / "part-00000.jsonl").exists()


def test_samples_at_temperature_0_are_warned_of(sluice, four, tmp_path):
    """--samples 2 at the default temperature 0 (greedy) gives the same
    answer twice, and said nothing: now a warning says so and what to give;
    with a temperature, or one answer, none. Tasks are named."""
    common = ("--max-tokens", "4", "--metrics-addr", "off", "--show", "0", "--limit", "1")
    says = "--samples 2 at temperature 0 (greedy, the default): every answer to an image is the same"
    res = sluice.caption(four, tmp_path / "greedy", *common, "--samples", "2")
    assert res.returncode == 0 and says in res.stderr, res.stderr
    rows = read_rows(tmp_path / "greedy")
    assert len(rows) == 2 and rows[0]["caption"] == rows[1]["caption"], rows
    for extra in (("--samples", "2", "--temperature", "0.7"), ()):
        res = sluice.caption(four, tmp_path / f"o{len(extra)}", *common, *extra)
        assert res.returncode == 0 and "--samples" not in res.stderr, res.stderr
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"hot": {"prompt": "Describe.", "sampling": {"temperature": 0.8}},
                                 "cold": {"prompt": "Name it."}}))
    res = sluice.caption(four, tmp_path / "tasks", *common, "--samples", "2", "--tasks", tasks)
    assert res.returncode == 0, res.stderr
    assert "task 'cold': " + says in res.stderr and "task 'hot'" not in res.stderr, res.stderr


def test_samples_give_a_row_per_answer(sluice, four, tmp_path):
    """--samples 3: three rows per image (column sample 0..2), each answer
    with its own seed (column seed); the first is the caption the job gives
    without --samples; JSONL and Parquet (pyarrow) alike; _summary.json counts
    rows and inputs; another --samples is another job."""
    import pyarrow.parquet as pq
    common = ("--max-tokens", "6", "--temperature", "0.9", "--metrics-addr", "off", "--show", "0")
    res = sluice.caption(four, tmp_path / "one", *common)
    assert res.returncode == 0, res.stderr
    single = {r["id"]: r for r in read_rows(tmp_path / "one")}
    res = sluice.caption(four, tmp_path / "three", *common, "--samples", "3")
    assert res.returncode == 0, res.stderr
    assert "12 rows, one per image and answer" in res.stdout
    rows = read_rows(tmp_path / "three")
    assert len(rows) == 12
    by_image = {}
    for r in rows:
        by_image.setdefault(r["id"], {})[r["sample"]] = r
    assert sorted(by_image) == sorted(single)
    differ = 0
    for image, answers in by_image.items():
        assert sorted(answers) == [0, 1, 2]
        assert answers[0]["caption"] == single[image]["caption"]
        assert answers[0]["seed"] == single[image]["seed"]
        assert len({a["seed"] for a in answers.values()}) == 3
        differ += len({a["caption"] for a in answers.values()}) > 1
        # The copies took the image's positions from the first answer.
        assert answers[1]["cached_tokens"] > answers[0]["cached_tokens"]
    assert differ >= 2
    summary = json.loads((tmp_path / "three" / "_summary.json").read_text())
    assert summary["rows"]["total"] == 12 and summary["rows"]["inputs_done"] == 4
    assert summary["params"]["samples"] == 3
    res = sluice.caption(four, tmp_path / "pq", *common, "--samples", "3", "--format", "parquet")
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / "pq" / "part-00000.parquet")
    assert str(table.schema.field("sample").type) == "int64"
    got = {(r["id"], r["sample"]): r["caption"] for r in table.to_pylist()}
    assert got == {(r["id"], r["sample"]): r["caption"] for r in rows}
    # A stage after the engine sees every answer (row:answers(), in order).
    script = tmp_path / "answers.lua"
    script.write_text("function process(row)\n"
                      "  local a = row:answers()\n"
                      "  row.columns.n_answers = #a\n"
                      "  row.columns.last = a[#a]\n"
                      "  return row\n"
                      "end\n")
    res = sluice.caption(four, tmp_path / "lua", *common, "--samples", "3", "--stage",
                         f"{script}@engine")
    assert res.returncode == 0, res.stderr
    for r in read_rows(tmp_path / "lua"):
        assert r["n_answers"] == 3 and r["last"] == by_image[r["id"]][2]["caption"]
    res = sluice.caption(four, tmp_path / "three", *common, "--samples", "2")
    assert res.returncode == 2 and "samples" in res.stderr


def test_samples_of_each_task(sluice, four, tmp_path):
    """--samples 2 with two tasks: a row per image and answer, each task's
    answer k in its columns (answer 0 the one a run without --samples
    gives, answer k with its answer's seed); --rows-per-task: a row per
    image, task and answer (columns task and sample; Parquet read by
    pyarrow); a task's choices counted for every answer."""
    import pyarrow.parquet as pq
    common = ("--max-tokens", "5", "--temperature", "0.9", "--metrics-addr", "off", "--show", "0",
              "--parallel", "1", "--task", "short=Describe briefly.", "--task",
              "tag=One word.")
    res = sluice.caption(four, tmp_path / "one", *common)
    assert res.returncode == 0, res.stderr
    single = {r["id"]: r for r in read_rows(tmp_path / "one")}
    res = sluice.caption(four, tmp_path / "two", *common, "--samples", "2")
    assert res.returncode == 0, res.stderr
    assert "8 rows, one per image and answer" in res.stdout
    rows = read_rows(tmp_path / "two")
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (i, k) for i in single for k in (0, 1))
    for r in rows:
        if r["sample"] == 0:
            assert (r["short"], r["tag"]) == (single[r["id"]]["short"], single[r["id"]]["tag"])
            assert r["seed"] == single[r["id"]]["seed"]
        else:
            assert r["seed"] != single[r["id"]]["seed"]
    assert any(r["short"] != single[r["id"]]["short"] for r in rows if r["sample"] == 1)
    res = sluice.caption(four, tmp_path / "per", *common, "--samples", "2", "--rows-per-task",
                         "--format", "parquet")
    assert res.returncode == 0, res.stderr
    assert "16 rows, one per image, task and answer" in res.stdout
    table = pq.read_table(tmp_path / "per" / "part-00000.parquet").to_pylist()
    by = {(r["id"], r["task"], r["sample"]): r for r in table}
    assert len(by) == 16
    for (image, task, k), r in by.items():
        if k == 0:
            assert r["caption"] == single[image][task]
    # A task's choices, every answer counted.
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"short": {"prompt": "Describe."},
                                 "ok": {"prompt": "Is it fine?", "choices": ["yes", "no"]}}))
    res = sluice.caption(four, tmp_path / "yn", "--max-tokens", "5", "--temperature", "0.9",
                         "--metrics-addr", "off", "--show", "0", "--tasks", tasks,
                         "--samples", "3")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "yn" / "_summary.json").read_text())
    assert sum(summary["answers"]["ok"].values()) == 12, summary["answers"]
    rows = read_rows(tmp_path / "yn")
    assert all(r["ok"] in ("yes", "no") and set(r["ok_scores"]) == {"yes", "no"} for r in rows)


def test_samples_through_the_openai_engine(sluice, llama_prefix, four, tmp_path):
    """--samples with --engine openai: one request per image with "n": 2
    and the row's seed (llama-server computes the prompt once and samples
    the second answer with seed + 1): two rows per image, the first the
    caption of the same job without --samples, both with the row's seed.
    --split-samples: a request per answer, each with its answer's seed (its
    seed column). Another way of drawing them is another job."""
    from openai_helpers import FakeServer, LlamaServer, Proxy, completion
    common = ("--engine", "openai", "--max-tokens", "6", "--temperature", "0.9",
              "--metrics-addr", "off", "--show", "0")
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url) as proxy:
        res = sluice.run("caption", four, "-o", tmp_path / "one", "--endpoint", server.url, *common)
        assert res.returncode == 0, res.stderr
        res = sluice.run("caption", four, "-o", tmp_path / "two", "--endpoint", proxy.url, *common,
                         "--samples", "2")
        assert res.returncode == 0, res.stderr
        sent = [json.loads(e["body"]) for e in proxy.log]
        assert len(sent) == 4 and all(b["n"] == 2 and not b["stream"] for b in sent)
        del proxy.log[:]
        res = sluice.run("caption", four, "-o", tmp_path / "split", "--endpoint", proxy.url,
                         *common, "--samples", "2", "--split-samples")
        assert res.returncode == 0, res.stderr
        sent = [json.loads(e["body"]) for e in proxy.log]
        assert len(sent) == 8 and not any("n" in b for b in sent)
        res = sluice.run("caption", four, "-o", tmp_path / "two", "--endpoint", server.url,
                         *common, "--samples", "2", "--split-samples")
        assert res.returncode == 2 and "samples_drawn_by" in res.stderr
    single = {r["id"]: r for r in read_rows(tmp_path / "one")}
    rows = read_rows(tmp_path / "two")
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (k, s) for k in single for s in (0, 1))
    for r in rows:
        assert r["seed"] == single[r["id"]]["seed"]
        if r["sample"] == 0:
            assert r["caption"] == single[r["id"]]["caption"]
    assert any(r["caption"] != single[r["id"]]["caption"] for r in rows if r["sample"] == 1)
    split = read_rows(tmp_path / "split")
    assert sorted((r["id"], r["sample"]) for r in split) == sorted((r["id"], r["sample"]) for r in rows)
    for r in split:
        assert (r["seed"] == single[r["id"]]["seed"]) == (r["sample"] == 0)
        if r["sample"] == 0:
            assert r["caption"] == single[r["id"]]["caption"]
    # A server that ignores "n" answers once: each row fails naming the
    # way out, and the run goes on.
    with FakeServer(lambda h, attempt, body: completion(h)) as fake:
        res = sluice.run("caption", four, "-o", tmp_path / "fake", "--endpoint", fake.url,
                         *common, "--samples", "2", "--max-attempts", "1")
    failed = read_rows(tmp_path / "fake")
    assert len(failed) == 8 and all("--split-samples" in (r["error"] or "") for r in failed)


def test_a_chosen_chat_template_changes_the_prompt_and_the_job(sluice, tmp_path):
    """--chat-template: another rendering of the same prompt (other
    positions), recorded in _summary.json and the resume fingerprint; an
    unknown name stops the command naming it; the OpenAI engine refuses it."""
    quiet = ("--max-tokens", 2, "--show", 0, "--metrics-addr", "off")
    own, chatml = tmp_path / "own", tmp_path / "chatml"
    assert sluice.caption(SAMPLES, own, *quiet).returncode == 0
    r = sluice.caption(SAMPLES, chatml, *quiet, "--chat-template", "chatml")
    assert r.returncode == 0, r.stderr
    tokens = {row["id"]: row["prompt_tokens"] for row in read_rows(own)}
    for row in read_rows(chatml):
        assert row["prompt_tokens"] != tokens[row["id"]]
    assert json.loads((chatml / "_summary.json").read_text())["chat_template"] == "chatml"
    assert json.loads((own / "_summary.json").read_text())["chat_template"] is None
    r = sluice.caption(SAMPLES, chatml, *quiet, "--chat-template", "llama3")
    assert r.returncode == 2 and "chat_template" in r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "bad", *quiet, "--chat-template", "chatmI")
    assert r.returncode == 2 and "'chatmI'" in r.stderr and "chatml" in r.stderr
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "http", "--engine", "openai",
                   "--endpoint", "http://127.0.0.1:9", "--chat-template", "chatml")
    assert r.returncode == 2 and "llama engine" in r.stderr
