"""The live page and the run report, against real components.

Live page: a caption run long enough to watch (the samples many times over,
--parallel 1, one thread, the tiny model, plus one corrupt image) serves /
on its metrics address; headless Chromium (Debian's package) loads it, runs
its JS for a few seconds of virtual time and dumps the DOM, which must show
non-zero counts and at least one image that loaded, with its caption -- the
same caption the run then writes for that row in its JSONL. A screenshot is
kept at build/test-artifacts/live-page.png.

Report: _summary.json's counts equal the JSONL rows (failures by stage and
class included), and _report.html holds the sampled rows' captions as written
and their thumbnails as data: URIs that Pillow decodes."""
import base64
import html.parser
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest
from PIL import Image

from conftest import REPO, SAMPLES, BackgroundRun, metrics_base, read_rows, sample_copies

ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Figures(html.parser.HTMLParser):
    """<figure>s of the gallery: index, img src, whether it loaded, caption text, id."""

    def __init__(self):
        super().__init__()
        self.figures, self.cur, self.field = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.cur = {"index": a.get("data-index"), "src": None, "caption": "", "id": "",
                        "loaded": "loaded" in (a.get("class") or "").split(), "error": False}
            self.figures.append(self.cur)
        elif self.cur is not None and tag == "img":
            self.cur["src"] = a.get("src")
        elif self.cur is not None and tag == "div":
            classes = (a.get("class") or "").split()
            self.field = "caption" if "caption" in classes else "id" if "id" in classes else None
            if "error" in classes:
                self.cur["error"] = True

    def handle_endtag(self, tag):
        if tag == "figure":
            self.cur = None
        if tag == "div":
            self.field = None

    def handle_data(self, data):
        if self.cur is not None and self.field:
            self.cur[self.field] += data


def text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m, f"#{element_id} not in the page"
    return m.group(1)


def get_json(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def tag_of(dom: str, element_id: str) -> str:
    m = re.search(rf'<[^>]*id="{element_id}"[^>]*>', dom)
    assert m, f"#{element_id} not in the page"
    return m.group(0)


def dom_with_status(chromium_args, page: bytes, status: dict) -> str:
    """The page as sluice served it, loaded in Chromium against a stub
    /api/status (and an empty gallery): how the page shows figures a real
    run cannot hold still for, such as rows the writer failed (that run
    stops)."""
    class Stub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/": page, "/api/status": json.dumps(status).encode(),
                    "/api/gallery": b"[]"}.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html" if self.path == "/" else
                             "application/json")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        return subprocess.run(chromium_args + ["--dump-dom", url], capture_output=True,
                              text=True, timeout=120).stdout
    finally:
        server.shutdown()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh)")
def test_live_page_in_headless_chromium(sluice, tmp_path):
    n_rows = sample_copies(tmp_path / "in", 60, corrupt=True)
    out = tmp_path / "out"
    run = BackgroundRun(sluice, tmp_path / "in", out, "--max-tokens", "96", "--parallel", "1",
                        "--threads", "1", "--show", "0", log_dir=tmp_path)
    proc = run.proc
    try:
        port = run.port()
        base = f"http://127.0.0.1:{port}"
        # Wait for a few rows so the page has something to show.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            status = get_json(f"{base}/api/status")
            if status.get("rows_done", 0) >= 3 and get_json(f"{base}/api/gallery"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the page could be loaded; raise the copies"

        common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                  "--virtual-time-budget=10000", "--window-size=1280,1600"]
        dom = subprocess.run(common + ["--dump-dom", base + "/"], capture_output=True, text=True,
                             timeout=120).stdout
        page = urllib.request.urlopen(base + "/", timeout=10).read()
        status = get_json(f"{base}/api/status")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-page.png"
        shot.unlink(missing_ok=True)
        subprocess.run(common + [f"--screenshot={shot}", base + "/"], capture_output=True,
                       timeout=120)
        assert proc.poll() is None, "the run ended while Chromium was loading the page"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # finish the rows in flight and write them
        proc.wait(timeout=120)

    done, total = int(text_of(dom, "rows-done").replace(",", "")), text_of(dom, "rows-total")
    assert 0 < done <= n_rows and int(total.replace(",", "")) == n_rows, (done, total)
    assert text_of(dom, "state").startswith("running"), text_of(dom, "state")
    # Every engine figure of /metrics has its key (four were left out: a
    # key table shorter than the figures); rows done have looked up their
    # images in the image cache.
    engine = status["engine"]
    assert {"choice_probes", "image_cache_queries", "image_cache_hits",
            "graphs_reused"} <= set(engine), engine
    assert engine["image_cache_queries"] >= 3, engine
    # Rows the writer could not write: their own line under "rows failed",
    # only when there are any (this run has none).
    assert status["rows_write_failed"] == 0, status
    assert "hidden" in tag_of(dom, "rows-write-failed") and not text_of(dom, "rows-write-failed")
    lost = dom_with_status(common, page, dict(status, rows_write_failed=16, rows_failed=1))
    assert text_of(lost, "rows-failed") == "1"
    assert text_of(lost, "rows-write-failed") == "16 not written (write failed)", \
        tag_of(lost, "rows-write-failed")
    assert "hidden" not in tag_of(lost, "rows-write-failed")
    stages_table = dom[dom.index('id="stages"'):]
    stages_table = stages_table[:stages_table.index("</table>")]
    stage_rows = re.findall(r"<tr><td>(\w+)</td>", stages_table)
    assert stage_rows == ["read", "decode", "engine", "write"], stage_rows

    rows = {r["id"]: r for r in read_rows(out)}
    figures = Figures()
    figures.feed(dom)
    shown = [f for f in figures.figures if f["src"] and f["loaded"] and not f["error"]]
    assert shown, f"no image loaded in the live gallery: {figures.figures[:3]}"
    for f in shown:
        assert f["src"] == f"/thumb/{f['index']}.jpg"
        row = rows.get(f["id"])
        assert row is not None, f"{f['id']} is shown but not in the output (stopped with SIGINT)"
        assert f["caption"] == row["caption"], (f["id"], f["caption"], row["caption"])

    assert shot.exists() and shot.stat().st_size > 10_000
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
    print(f"\nlive page: {done} of {total} rows done, {len(shown)} images with captions; "
          f"screenshot {shot}")


def sampled_figures(report: str):
    figures = Figures()
    figures.feed(report)
    return figures.figures


def test_summary_and_report_match_the_output(sluice, tmp_path):
    n_rows = sample_copies(tmp_path / "in", 10, corrupt=True)
    (tmp_path / "in" / "broken" / "empty.png").write_bytes(b"")
    n_rows += 1
    out = tmp_path / "out"
    r = sluice.caption(tmp_path / "in", out, "--max-tokens", "8", "--threads", "1",
                       "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 3, r.stderr  # finished, some rows failed
    assert f"report: {out}/_report.html" in r.stdout

    rows = read_rows(out)
    assert len(rows) == n_rows
    failed = [row for row in rows if row["error"]]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["format_version"] == 1 and summary["status"] == "ok"
    assert summary["rows"] == {"total": len(rows), "ok": len(rows) - len(failed),
                               "failed": len(failed), "input": n_rows, "skipped": 0,
                               "dropped": 0, "inputs_done": n_rows, "retried": 0,
                               "deferred": 0}
    assert summary["tokens"]["generated"] == sum(row["generated_tokens"] for row in rows)
    assert summary["tokens"]["prompt"] == sum(row["prompt_tokens"] for row in rows)
    assert summary["model"] == rows[0]["model"]
    assert summary["output_file"] == str(out / "part-00000.jsonl")
    assert [s["name"] for s in summary["stages"]] == ["read", "decode", "engine", "write"]
    assert all(s["busy_s"] >= 0 and s["idle_s"] >= 0 and s["blocked_s"] >= 0
               for s in summary["stages"])
    assert summary["params"]["max_tokens"] == 8
    # Both broken files fail in decode with a decode error.
    by_stage = Counter(row["error_stage"] for row in failed)
    assert {(f["stage"], f["class"]): f["rows"] for f in summary["failures"]} == \
        {("decode", "decode"): by_stage["decode"]} and by_stage["decode"] == 2

    report = (out / "_report.html").read_text(encoding="utf-8")
    figures = sampled_figures(report)
    assert len(figures) == summary["sample_rows"] == min(64, len(rows))
    by_id = {row["id"]: row for row in rows}
    assert len({f["id"] for f in figures}) == len(figures)
    for f in figures:
        row = by_id[f["id"]]
        if row["error"]:
            assert f["error"] and row["error"] in html.unescape(f["caption"])
            assert f["src"] is None
            continue
        assert f["caption"] == row["caption"]
        assert f["src"].startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(f["src"].split(",", 1)[1]))) as im:
            im.load()
            assert im.format == "JPEG" and max(im.size) <= 160
    assert "http://" not in report and "https://" not in report  # stands alone
    assert 'id="status"' not in report  # finished: no word of an early end


def test_the_report_is_utf8_where_a_failed_file_name_is_not(sluice, tmp_path):
    """A broken file whose name is not UTF-8 (Latin-1 caf\\xe9) put that
    byte raw into _report.html through its row's error: the page, which
    says it is UTF-8, no longer decoded as such. The error shows as its row
    holds it, the byte as U+FFFD."""
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", inp / "good.jpg")
    with open(os.path.join(os.fsencode(inp), b"caf\xe9-broken.jpg"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "out"
    r = sluice.caption(inp, out, "--max-tokens", "2", "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 3, r.stderr  # finished, a row failed
    failed = [row for row in read_rows(out) if row["error"]]
    assert len(failed) == 1 and "caf\ufffd-broken.jpg" in failed[0]["error"], failed
    report = (out / "_report.html").read_bytes().decode("utf-8")  # strict: raises on a bad byte
    shown = [html.unescape(f["caption"]) for f in sampled_figures(report) if f["error"]]
    assert len(shown) == 1 and failed[0]["error"] in shown[0], shown


def test_the_report_of_a_run_that_stopped_says_so(sluice, tmp_path):
    """A run stopped by --max-failed left a _report.html that read as a
    finished job's ("N rows, N-1 captioned, 1 failed"), while _summary.json
    said too_many_failed and most inputs were not done."""
    n_rows = sample_copies(tmp_path / "in", 4, corrupt=True)
    out = tmp_path / "out"
    r = sluice.caption(tmp_path / "in", out, "--max-tokens", "4", "--max-failed", "0",
                       "--metrics-addr", "off", "--show", "0")
    assert r.returncode != 0 and "--max-failed" in r.stderr, r.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "too_many_failed" and summary["rows"]["input"] == n_rows
    done = summary["rows"]["inputs_done"]
    # How many were done at the stop depends on what was in flight: the
    # report says what _summary.json counted, and what is left to do.
    left = "every one read (--retry-failed captions the failed ones again)" \
        if done == n_rows else "(the same command again goes on from there)"
    report = (out / "_report.html").read_text(encoding="utf-8")
    assert '<p id="status" class="error">The run ended early: <b>too_many_failed</b> ' \
           f"(_summary.json's <code>status</code>); {done} of {n_rows} inputs done" in report, report
    assert left in report
    r = sluice.caption(tmp_path / "in", out, "--max-tokens", "4", "--metrics-addr", "off",
                       "--show", "0")
    assert r.returncode in (0, 3), r.stderr  # 0: nothing was left to do
    assert json.loads((out / "_summary.json").read_text())["status"] == "ok"
    assert 'id="status"' not in (out / "_report.html").read_text(encoding="utf-8")


def test_failures_by_class_in_metrics_prom(sluice, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("*.md"))
    (src / "zero.jpg").write_bytes(b"")
    os.symlink(tmp_path / "missing.jpg", src / "dangling.jpg")
    out = tmp_path / "out"
    r = sluice.caption(src, out, "--max-tokens", "4", "--threads", "1",
                       "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 3, r.stderr
    rows = read_rows(out)
    classes = {}
    for line in (out / "_metrics.prom").read_text().splitlines():
        m = re.match(r'sluice_rows_failed_by_class_total\{stage="(\w+)",class="(\w+)"\} (\S+)',
                     line)
        if m:
            classes[(m.group(1), m.group(2))] = float(m.group(3))
    failed = {row["id"]: row for row in rows if row["error"]}
    assert set(failed) == {"zero.jpg", "dangling.jpg"}, failed.keys()
    assert classes == {("decode", "decode"): 1, ("decode", "not_found"): 1}, classes


def test_the_live_page_counts_an_http_engines_tokens_and_requests(sluice, tmp_path):
    # --engine openai: /api/status said replicas 0, no request running and
    # no token while /metrics counted them per endpoint, so the page showed
    # 0.0 tokens/s and "0 / 0" requests all run long.
    from openai_helpers import FakeServer, completion  # usage: 10 prompt, 3 completion tokens

    n_rows = sample_copies(tmp_path / "in", 40)
    with FakeServer(lambda h, n, body: completion(h, delay_s=0.2)) as fake:
        with BackgroundRun(sluice, tmp_path / "in", tmp_path / "out", "--engine", "openai",
                           "--endpoint", fake.url, "--show", "0", log_dir=tmp_path) as run:
            url = f"http://127.0.0.1:{run.port()}/api/status"
            seen = []
            deadline = time.monotonic() + 60
            while run.proc.poll() is None and time.monotonic() < deadline:
                try:
                    s = get_json(url)
                except OSError:
                    break  # the run ended between the poll and the request
                if s.get("rows_done"):
                    seen.append(s)
                if len(seen) >= 3:
                    break
                time.sleep(0.3)
            rc = run.proc.wait(timeout=120)
    assert rc == 0, run.log()
    assert seen, f"no status with rows done while the run went on: {run.log()}"
    for s in seen:
        e = s["engine"]
        assert e["replicas"] == 1, e
        # Every answer counts 3 generated and 10 prompt tokens; the writer
        # is after the engine, so the done rows' answers are counted.
        assert e["generation_tokens"] >= 3 * s["rows_done"], (e, s["rows_done"])
        assert e["generation_tokens"] % 3 == 0 and e["prompt_tokens"] % 10 == 0, e
        assert e["generation_tokens"] <= 3 * n_rows, e
    assert any(s["engine"]["requests_running"] > 0 for s in seen), [s["engine"] for s in seen]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh)")
def test_the_live_page_opened_with_its_token_shows_the_run(sluice, tmp_path):
    """With --metrics-token-file the server answers 401 to what does not
    bring the token: the page, opened as /?token=T, passes it on to the
    status, gallery and thumbnails it fetches (without that its figures
    stay empty and its state says 'not reachable')."""
    from openai_helpers import FakeServer, completion
    import secrets

    token = secrets.token_urlsafe(24)
    tfile = tmp_path / "token"
    tfile.write_text(token + "\n")
    tfile.chmod(0o600)
    release = threading.Event()  # three rows answered, the others when the page is read

    def answer(h, n, body):
        with lock:
            served[0] += 1
            first = served[0] <= 3
        if not first:
            release.wait(60)
        completion(h, text=f"caption {served[0]}")
    lock, served = threading.Lock(), [0]
    err_path = tmp_path / "sluice.stderr"
    with FakeServer(answer, limit_s=90) as engine, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [str(sluice.binary), "caption", str(SAMPLES), "-o", str(tmp_path / "out"),
             "--engine", "openai", "--endpoint", engine.url, "--max-in-flight", "4",
             "--show", "0", "--metrics-addr", "127.0.0.1:0", "--metrics-token-file", str(tfile)],
            stdout=subprocess.DEVNULL, stderr=err)
        try:
            base = metrics_base(proc, err_path)
            deadline = time.monotonic() + 60
            while get_json(f"{base}/api/status?token={token}").get("rows_done", 0) < 3:
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
            common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                      "--virtual-time-budget=10000", "--window-size=1280,1600"]
            dom = subprocess.run(common + ["--dump-dom", f"{base}/?token={token}"],
                                 capture_output=True, text=True, timeout=120).stdout
            assert proc.poll() is None, err_path.read_text()
        finally:
            release.set()
        assert proc.wait(timeout=120) == 0, err_path.read_text()
    assert text_of(dom, "state").startswith("running"), text_of(dom, "state")
    assert int(text_of(dom, "rows-done")) >= 3
    assert int(text_of(dom, "rows-total")) == len(read_rows(tmp_path / "out"))
    figures = Figures()
    figures.feed(dom)
    loaded = [f for f in figures.figures if f["src"] and f["loaded"]]
    assert len(loaded) >= 3, figures.figures
    for f in loaded:
        assert f["src"] == f"/thumb/{f['index']}.jpg?token={token}", f
