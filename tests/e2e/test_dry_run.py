"""End-to-end tests of --dry-run (docs/inputs.md, "Checking inputs first"):
no model given, every input read and decoded and written as a row with no
answer; failed inputs (corrupt, truncated, empty, missing, an HTTP 404, a
manifest line that is not JSON) named with their cause; format and
input_bytes checked against the files; the summary's counts and bytes
against the rows; exit 3 with failures, 0 clean; the fingerprint keeps dry
and real runs apart both ways; a dry run killed with SIGKILL resumes with
every row once; --engine openai encodes the JPEGs and sends nothing;
sluice batch --dry-run and a stage after the engine are refused; a video's
row has its frames, container and file size."""
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import SAMPLES, TINY, sample_copies, sample_images
from localserver import LocalServer
from test_sources import by_id, http_root, jsonl_rows as rows_of  # noqa: F401 (a fixture)

duckdb = pytest.importorskip("duckdb")

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault")
QUIET = ("--metrics-addr", "off", "--show", "0")
JPEGS = [p for p in sample_images() if p.suffix == ".jpg"]
MODEL = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")


def dry(sluice, inputs, out, *extra, timeout=600):
    """sluice caption --dry-run with no model."""
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    r = sluice.run("caption", *inputs, "-o", out, "--dry-run", *QUIET, *extra, timeout=timeout)
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    return r


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files (a 404 for what is not there) and counts every request,
    POSTs included (a chat request would be one)."""
    hits: list = []

    def do_GET(self):
        self.hits.append(("GET", self.path))
        super().do_GET()

    def do_POST(self):
        self.hits.append(("POST", self.path))
        self.send_error(500)

    def log_message(self, *args):
        pass


def test_every_input_is_a_row_and_every_failure_is_named(sluice, http_root, tmp_path):
    www, base = http_root
    folder = tmp_path / "in"
    folder.mkdir()
    for p in JPEGS[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    data = JPEGS[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (folder / "empty.png").write_bytes(b"")
    (www / "web.jpg").write_bytes(JPEGS[3].read_bytes())
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"id": "here", "image": str(JPEGS[1])}),
        json.dumps({"id": "missing", "image": str(tmp_path / "gone.jpg")}),
        json.dumps({"id": "web", "url": f"{base}/web.jpg"}),
        json.dumps({"id": "web404", "url": f"{base}/nope.jpg"}),
        '{"id": "broken", this is not json',
        json.dumps({"id": "pair", "images": [str(JPEGS[0]), str(JPEGS[2])]}),
    ]) + "\n")
    rows, runs = {}, []
    for name, inputs in (("folder", folder), ("manifest", manifest)):
        r = dry(sluice, inputs, tmp_path / name)
        assert r.returncode == 3, r.stderr[-3000:]
        runs.append((tmp_path / name, r, by_id(rows_of(tmp_path / name))))
        rows.update(runs[-1][2])
    want_ok = {p.name: p for p in JPEGS[:3]}
    want_ok.update({"here": JPEGS[1], "web": JPEGS[3]})
    failed = {"truncated.jpg", "corrupt.jpg", "empty.png", "missing", "web404", "list.jsonl:5"}
    pair = rows.pop("pair")  # a list of images: their bytes summed
    assert pair["error"] is None and pair["image_count"] == 2 and pair["format"] == "jpeg"
    assert pair["input_bytes"] == JPEGS[0].stat().st_size + JPEGS[2].stat().st_size
    assert set(rows) == set(want_ok) | failed, sorted(rows)

    for rid, src in want_ok.items():
        row = rows[rid]
        assert row["error"] is None and row["error_stage"] is None, row
        assert row["caption"] is None and row["finish_reason"] is None
        assert row["prompt_tokens"] == row["generated_tokens"] == 0
        assert row["format"] == "jpeg" and row["input_bytes"] == src.stat().st_size
        assert row["width"] > 0 and row["height"] > 0 and row["source_width"] > 0
        assert "jpeg_bytes" not in row  # the llama engine sends pixels
    # Each failure names its input and the cause.
    t = rows["truncated.jpg"]
    assert t["error_stage"] == "decode" and "truncated" in t["error"]
    assert t["format"] == "jpeg" and t["input_bytes"] == len(data) // 3
    assert rows["corrupt.jpg"]["error_stage"] == "decode"
    assert "corrupt.jpg" in rows["corrupt.jpg"]["error"]
    assert "empty" in rows["empty.png"]["error"] and rows["empty.png"]["input_bytes"] == 0
    m = rows["missing"]
    assert "gone.jpg" in m["error"] and "No such file" in m["error"]
    assert m["input_bytes"] is None and m["format"] is None
    assert "HTTP 404" in rows["web404"]["error"] and "nope.jpg" in rows["web404"]["error"]
    assert rows["list.jsonl:5"]["error_stage"] == "read"
    assert "invalid JSON" in rows["list.jsonl:5"]["error"]
    assert all(rows[i]["caption"] is None for i in failed)

    for out, r, got in runs:
        summary = json.loads((out / "_summary.json").read_text())
        bad = [row for row in got.values() if row["error"]]
        assert summary["dry_run"] is True and summary["model"] == ""
        assert summary["rows"]["total"] == len(got) and summary["rows"]["failed"] == len(bad)
        by_stage = Counter(row["error_stage"] for row in bad)
        summed = Counter()
        for f in summary["failures"]:
            summed[f["stage"]] += f["rows"]
        assert by_stage == summed
        assert summary["input_bytes"] == sum(row["input_bytes"] or 0 for row in got.values())
        assert summary["jpeg_bytes"] is None
        assert summary["throughput"]["input_mb_per_s"] > 0
        assert summary["throughput"]["decode_capacity_rows_per_s"] > 0
        assert not [s for s in summary["stages"] if s["name"] == "engine"]
        assert 'id="dry-run"' in (out / "_report.html").read_text()
        # The last lines: the counts, the failures by cause, the speed.
        assert f"dry run (no model): {len(got)} rows: {len(got) - len(bad)} read and decoded, " \
               f"{len(bad)} failed (" in r.stdout, r.stdout
        assert "rows/s" in r.stdout and "MB/s" in r.stdout and "if never waiting" in r.stdout

    # In Parquet, queried with DuckDB as docs/inputs.md does.
    r = dry(sluice, folder, tmp_path / "pq", "--format", "parquet")
    assert r.returncode == 3, r.stderr[-3000:]
    got = duckdb.sql(f"SELECT format, count(*), sum(input_bytes) FROM "
                     f"'{tmp_path}/pq/*.parquet' WHERE error IS NULL GROUP BY 1").fetchall()
    assert got == [("jpeg", 3, sum(p.stat().st_size for p in JPEGS[:3]))]

    # Clean inputs: exit 0.
    r = dry(sluice, [folder / JPEGS[0].name, folder / JPEGS[1].name], tmp_path / "clean")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(rows_of(tmp_path / "clean")) == 2


def test_dry_and_real_runs_do_not_share_a_folder(sluice, four, tmp_path):
    real = ("--max-tokens", "2", *QUIET)
    out = tmp_path / "dry"
    assert dry(sluice, four, out).returncode == 0
    # A real run over a dry run's rows: refused, nothing touched.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    r = sluice.caption(four, out, *real)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "dry_run" in r.stderr and "--overwrite" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == stamps
    # The dry run again: done, whatever model is named (it opens none).
    r = dry(sluice, four, out, *MODEL)
    assert r.returncode == 0 and "already done" in r.stdout, r.stderr[-2000:]

    # The reverse: a dry run over a real run's rows.
    out = tmp_path / "real"
    assert sluice.caption(four, out, *real).returncode == 0
    r = dry(sluice, four, out)
    assert r.returncode == 2 and "dry_run" in r.stderr, r.stderr[-2000:]
    assert all(row["caption"] for row in rows_of(out))


def test_a_killed_dry_run_resumes_with_each_row_once(sluice, tmp_path):
    src = tmp_path / "in"
    n = sample_copies(src, 40)
    out = tmp_path / "out"
    cmd = [str(sluice.binary), "caption", str(src), "-o", str(out), "--dry-run", "--shard-rows",
           "20", *map(str, QUIET)]
    # Each row's ledger record pauses, so the kill lands mid-run.
    env = dict(os.environ, SLUICE_TEST_FAULTS="ledger.add=sleep:10")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    before = len(rows_of(out))
    assert 0 < before < n

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = [row["id"] for row in rows_of(out)]
    assert not [i for i, c in Counter(ids).items() if c > 1], "a row written twice"
    assert sorted(ids) == sorted(f"c{i:03d}/{p.relative_to(SAMPLES)}" for i in range(40)
                                 for p in sample_images())
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["skipped"] == before and summary["rows"]["total"] == n - before


def test_openai_dry_run_encodes_the_jpegs_and_sends_nothing(sluice, four, tmp_path):
    out = tmp_path / "o"
    CountingHandler.hits = []
    with LocalServer(functools.partial(CountingHandler, directory=str(tmp_path))) as server:
        r = dry(sluice, four, out, "--engine", "openai", "--endpoint", server.url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert CountingHandler.hits == []  # not even GET /v1/models
    rows = rows_of(out)
    assert len(rows) == 4 and all(row["jpeg_bytes"] > 0 for row in rows)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["jpeg_bytes"] == sum(row["jpeg_bytes"] for row in rows)
    assert "JPEGs to send" in r.stdout
    # Smaller JPEGs asked for, smaller JPEGs counted; the originals sent
    # as they are count as their files.
    r = dry(sluice, four, tmp_path / "small", "--engine", "openai", "--jpeg-edge", "64")
    assert r.returncode == 0, r.stderr[-2000:]
    small = {row["id"]: row["jpeg_bytes"] for row in rows_of(tmp_path / "small")}
    big = {row["id"]: row["jpeg_bytes"] for row in rows}
    assert small.keys() == big.keys() and all(small[i] < big[i] for i in big)
    r = dry(sluice, four, tmp_path / "orig", "--engine", "openai", "--send-original")
    assert r.returncode == 0, r.stderr[-2000:]
    for row in rows_of(tmp_path / "orig"):
        if row["format"] in ("jpeg", "png"):
            assert row["jpeg_bytes"] == row["input_bytes"] == (four / row["id"]).stat().st_size


def test_what_a_dry_run_refuses(sluice, four, tmp_path):
    # A stage after the engine would wait for answers: refused by name.
    stage = tmp_path / "after.lua"
    stage.write_text("function process(row) return row end\n")
    r = dry(sluice, four, tmp_path / "a", "--stage", f"{stage}@engine")
    assert r.returncode == 2 and "'after'" in r.stderr and "dry run" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()
    # One after decode runs.
    r = dry(sluice, four, tmp_path / "b", "--stage", str(stage))
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(rows_of(tmp_path / "b")) == 4
    # A batch file's output is answers: refused.
    batch = tmp_path / "req.jsonl"
    batch.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"messages": [{"role": "user", "content": "hi"}]}}) + "\n")
    r = sluice.run("batch", batch, "-o", tmp_path / "c", "--dry-run", *QUIET)
    assert r.returncode == 2 and "--dry-run" in r.stderr and "batch" in r.stderr, r.stderr
    assert not list((tmp_path / "c").glob("part-*"))


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI to make a clip")
def test_a_videos_row_has_its_frames_size_and_container(sluice, tmp_path):
    from test_video import make_clip
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "colours.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"])
    (folder / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    for engine in ("llama", "openai"):
        out = tmp_path / engine
        r = dry(sluice, folder, out, "--engine", engine, "--video-frames", "4")
        assert r.returncode == 0, r.stderr[-2000:]
        v = by_id(rows_of(out))["colours.mp4"]
        assert v["video_frames"] == 4 and v["video_seconds"] == pytest.approx(4, abs=0.2)
        assert "mp4" in v["format"] and v["width"] == 64
        assert v["input_bytes"] == (folder / "colours.mp4").stat().st_size
        if engine == "openai":  # the frames' JPEGs, encoded
            assert v["jpeg_bytes"] > 0
        else:
            assert "jpeg_bytes" not in v


def test_a_job_file_runs_dry_without_fetching_its_model(sluice, four, tmp_path):
    # examples/caption.yaml names an hf:// model: a dry run fetches nothing
    # (offline, a fetch would fail) and the flag overrides the file.
    r = subprocess.run([str(sluice.binary), "run", str(SAMPLES.parent / "examples" / "caption.yaml"),
                        str(four), "-o", str(tmp_path / "o"), "--dry-run", *QUIET],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fetching" not in r.stderr and not (tmp_path / "hf").exists()
    got = duckdb.sql(f"SELECT count(*), count(caption), min(format) FROM "
                     f"'{tmp_path}/o/*.parquet'").fetchall()
    assert got == [(4, 0, "jpeg")]


def test_a_dry_run_over_mpi_ranks_sums_every_ranks_bytes(sluice_bin, tmp_path):
    from test_mpi import MPIRUN, mpi_built, mpi_env, mpirun_args
    if not MPIRUN or not mpi_built(sluice_bin):
        pytest.skip("sluice built without MPI, or no mpirun")
    src = tmp_path / "in"
    n = sample_copies(src, 8)
    out = tmp_path / "out"
    r = subprocess.run(mpirun_args(2) + [str(sluice_bin), "caption", str(src), "-o", str(out),
                                         "--dry-run", "--input-shard-size", "3", "--shard-rows",
                                         "5", "--decode-workers", "1", *QUIET],
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows, parts = [], set()
    for part in sorted(out.glob("part-*.jsonl")):
        lines = part.read_text().splitlines()
        rows += [json.loads(line) for line in lines]
        parts.add(int(part.name[5:10]) % 2)
    assert len(by_id(rows)) == n and parts == {0, 1}  # both ranks wrote
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["total"] == n
    assert summary["input_bytes"] == sum(row["input_bytes"] for row in rows)
    # Every rank's parts are named, by number, not rank 0's last alone.
    on_disk = sorted(out.glob("part-*.jsonl"), key=lambda p: int(p.name[5:-6]))
    assert summary["output_files"] == [p.name for p in on_disk]
    report = (out / "_report.html").read_text()
    assert all(f"<code>{p.name}</code>" in report for p in on_disk[:20])  # of more, the first 20


def test_the_report_names_every_part_this_run_wrote(sluice, tmp_path):
    """_summary.json's output_files and _report.html's Output line list the
    parts of this run, all of them: not the last alone, not an earlier
    run's."""
    src, out = tmp_path / "in", tmp_path / "out"
    sample_copies(src / "first", 1)
    assert dry(sluice, src, out, "--shard-rows", "3").returncode == 0
    before = {p.name for p in out.glob("part-*.jsonl")}
    sample_copies(src / "second", 1)  # the rerun captions these alone
    r = dry(sluice, src, out, "--shard-rows", "3")
    assert r.returncode == 0, r.stderr
    this_run = sorted({p.name for p in out.glob("part-*.jsonl")} - before)
    assert len(this_run) >= 3 and before, (before, this_run)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["output_dir"] == str(out)
    assert summary["output_files"] == this_run
    assert summary["output_file"] == str(out / this_run[-1])  # as before: the last
    report = (out / "_report.html").read_text()
    line = next(line for line in report.splitlines() if "Output:" in line)
    assert f'<code id="output-dir">{out}</code>' in line
    assert f"{len(this_run)} part files" in line
    assert all(f"<code>{name}</code>" in line for name in this_run), line
    assert not any(name in line for name in before), line


def test_the_report_names_the_first_20_of_many_parts(sluice, tmp_path):
    """A job of thousands of parts would bury _report.html under their
    names: it names the first 20 and counts the rest, which _summary.json
    lists."""
    src, out = tmp_path / "in", tmp_path / "out"
    sample_copies(src, 4)
    assert dry(sluice, src, out, "--shard-rows", "1").returncode == 0
    parts = sorted(p.name for p in out.glob("part-*.jsonl"))
    assert len(parts) > 25, parts
    assert json.loads((out / "_summary.json").read_text())["output_files"] == parts
    line = next(line for line in (out / "_report.html").read_text().splitlines()
                if "Output:" in line)
    assert f"{len(parts)} part files" in line
    assert all(f"<code>{name}</code>" in line for name in parts[:20]), line
    assert not any(name in line for name in parts[20:]), line
    assert f"and {len(parts) - 20} more" in line, line


def test_a_job_too_small_for_its_ranks_says_how_to_split_it(sluice_bin, tmp_path):
    """16 inputs on 3 ranks make one shard of the default 1,000: one rank
    does it all. Rank 0 says so and what splits it (docs/deploy.md, "MPI");
    that size gives every rank rows."""
    from test_mpi import MPIRUN, mpi_built, mpi_env, mpirun_args
    if not MPIRUN or not mpi_built(sluice_bin):
        pytest.skip("sluice built without MPI, or no mpirun")
    src = tmp_path / "in"
    n = sample_copies(src, 1)

    def run(out, *extra):
        r = subprocess.run(mpirun_args(3) + [str(sluice_bin), "caption", str(src), "-o", str(out),
                                             "--dry-run", "--shard-rows", "2", "--decode-workers",
                                             "1", *QUIET, *extra],
                           capture_output=True, text=True, timeout=600, env=mpi_env())
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        rows = Counter()  # by rank: rank r's parts are numbered r, r + 3, ...
        for part in out.glob("part-*.jsonl"):
            rows[int(part.name[5:10]) % 3] += len(part.read_text().splitlines())
        assert sum(rows.values()) == n
        return r, rows

    size = -(-n // 3)
    r, rows = run(tmp_path / "default")
    assert len([k for k, v in rows.items() if v]) == 1, rows
    assert "2 of 3 ranks were handed no input" in r.stderr, r.stderr
    assert f"--input-shard-size {size} (its {n} inputs over 3 ranks)" in r.stderr, r.stderr
    r, rows = run(tmp_path / "split", "--input-shard-size", str(size))
    assert all(rows[rank] > 0 for rank in range(3)), rows
    assert "handed no input" not in r.stderr, r.stderr


def test_pixels_do_not_ride_to_the_writer(sluice, tmp_path):
    """Without a stage after decode, a dry run frees each image's pixels at
    decode's end (the memory in flight is the rows, not 512x512x3 images);
    a stage after decode may read them, so then they stay."""
    src = tmp_path / "in"
    sample_copies(src, 8)
    noop = tmp_path / "noop.lua"
    noop.write_text("function process(row) return row end\n")
    peaks = {}
    for kind, extra in (("plain", ()), ("stage", ("--stage", f"{noop}@decode"))):
        r = dry(sluice, src, tmp_path / kind, "--decode-workers", "1", *extra)
        assert r.returncode == 0, r.stderr
        peaks[kind] = json.loads((tmp_path / kind / "_summary.json").read_text())[
            "memory"]["peak_bytes_in_flight"]
    assert peaks["stage"] > 512 * 512 * 3  # at least an image's pixels in flight
    assert peaks["plain"] * 2 < peaks["stage"], peaks


def test_failed_rows_are_printed_one_by_one_up_to_a_hundred(sluice, tmp_path):
    # Every row failing (a manifest whose files are elsewhere) wrote a
    # stderr line each: millions of lines for a big job.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{i:03d}", "image": f"gone/{i}.jpg"}) + "\n"
                                for i in range(130)))
    out = tmp_path / "out"
    r = dry(sluice, manifest, out)
    assert r.returncode == 3, r.stderr
    lines = [line for line in r.stderr.splitlines() if " failed (" in line]
    assert len(lines) == 100, len(lines)
    assert r.stderr.count("more than 100 rows failed: the rest are not printed one by one") == 1
    rows = [json.loads(line) for line in (out / "part-00000.jsonl").read_text().splitlines()]
    assert len(rows) == 130 and all(row["error"] for row in rows)


def test_rows_the_writer_could_not_write_are_not_failed_rows(sluice, tmp_path):
    # A part whose sync failed (an I/O error) counted its rows as failed
    # rows in the progress line and in sluice_rows_failed_total, as if the
    # inputs were broken; they were fine, and the next run answers them.
    # Now a count of their own: "N not written (write failed)".
    src = tmp_path / "in"
    sample_copies(src, 1)
    out = tmp_path / "out"
    env = dict(os.environ, SLUICE_TEST_FAULTS="fsync=eio@1")
    r = subprocess.run([str(sluice.binary), "caption", str(src), "-o", str(out), "--dry-run",
                        "--metrics-addr", "off", "--show", "0", "--shard-rows", "2"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stderr
    assert "Input/output error" in r.stderr, r.stderr
    last = [line for line in r.stderr.splitlines() if line.startswith("progress: ")][-1]
    assert " 0 failed, " in last and " not written (write failed)" in last, last
    lost = int(last.split(" not written")[0].rsplit(", ", 1)[1])
    assert lost >= 2, last  # the part given up held two rows at least
    assert "failed (write)" not in r.stderr  # no row is named as failed
    text = (out / "_metrics.prom").read_text()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("sluice_rows_")}
    assert values["sluice_rows_failed_total"] == 0, values
    assert values["sluice_rows_write_failed_total"] == lost, values
    # The next run writes them: every input once.
    r = dry(sluice, src, out, "--shard-rows", "2")
    assert r.returncode == 0, r.stderr
    ids = [json.loads(line)["id"] for part in sorted(out.glob("part-*.jsonl"))
           for line in part.read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == len(sample_images())
