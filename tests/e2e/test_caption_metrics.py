"""The caption job's metrics: served while it runs (Prometheus text that the
Prometheus client parses, vLLM's engine names), and written at the end to
_metrics.prom with counters equal to what the output holds."""
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (SAMPLES, TINY, BackgroundRun, metrics_base, read_rows, sample_copies,
                      sample_images)

ENGINE_NAMES = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge", "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter", "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter", "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "sluice_engine_image_cache_queries": "counter", "sluice_engine_image_cache_hits": "counter",
}


def families(text):
    # the client strips _total from counter family names
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams, name, **labels):
    return sum(s.value for s in fams[name].samples
               if s.name.endswith("_total") or fams[name].type != "counter"
               if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_while_running_and_at_the_end(sluice, tmp_path):
    src = tmp_path / "in"
    sample_copies(src, 20)
    out = tmp_path / "out"
    # The prefix cache off: a row whose picture a free sequence still holds
    # skips its image prefill as the scheduling falls (a run once had 638
    # prefills of 640 chunks), so the image cache's counts below are exact
    # only without it (test_prefix_cache.py checks its metrics).
    with BackgroundRun(sluice, src, out, "--max-tokens", "32", "--show", "0", "--prefix-cache", "off",
                       log_dir=tmp_path) as run:
        port = run.port()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        live = families(body)
        for name, kind in ENGINE_NAMES.items():
            assert name in live, name
            assert live[name].type == kind, (name, live[name].type)
        for s in live["vllm:num_requests_running"].samples:
            assert s.labels["model_name"] == "sluice-tiny-random" and s.labels["engine"] == "llama-0"
        assert "sluice_stage_rows_in" in live and "sluice_bytes_in_flight" in live
        assert "process_resident_memory_bytes" in live
        rc = run.proc.wait(timeout=600)
    assert rc == 0, run.log()

    rows = read_rows(out)
    final = families((out / "_metrics.prom").read_text())
    assert total(final, "sluice_rows_done") == len(rows) == 20 * len(sample_images())
    assert total(final, "sluice_rows_failed") == 0
    assert total(final, "sluice_input_rows") == len(rows)  # the counting walk's total
    assert total(final, "sluice_eta_seconds") == 0
    assert total(final, "sluice_stage_rows_out", stage="write") == len(rows)
    assert total(final, "vllm:request_success") == len(rows)
    assert total(final, "vllm:request_success", finished_reason="length") == \
        sum(1 for r in rows if r["finish_reason"] == "length")
    assert total(final, "vllm:generation_tokens") == sum(r["generated_tokens"] for r in rows)
    assert total(final, "vllm:prefix_cache_hits") == sum(r["cached_tokens"] for r in rows)
    ttft = [s for s in final["vllm:time_to_first_token_seconds"].samples
            if s.name.endswith("_count")]
    assert sum(s.value for s in ttft) == len(rows)

    # The engine loop's phases: one observation per step for each step phase,
    # one per row for preprocessing, one per image chunk prefilled, and one
    # per chunk encoded: each picture's 20 copies are encoded once, the
    # others come from the image cache.
    phases = final["sluice_engine_step_seconds"]
    assert phases.type == "histogram"
    count = {s.labels["phase"]: s.value for s in phases.samples if s.name.endswith("_count")}
    secs = {s.labels["phase"]: s.value for s in phases.samples if s.name.endswith("_sum")}
    step_phases = ["admit", "batch", "decode", "logits", "sample", "detokenize", "bookkeeping"]
    assert set(count) == set(step_phases + ["preprocess", "encode", "image_prefill"])
    steps = count["decode"]
    # every row generates at least one token, one per step at most per row
    assert max(r["generated_tokens"] for r in rows) <= steps <= \
        sum(r["generated_tokens"] for r in rows) + len(rows)
    assert all(count[p] == steps for p in step_phases), count
    assert count["preprocess"] == len(rows)
    hits = total(final, "sluice_engine_image_cache_hits")
    assert count["encode"] + hits == count["image_prefill"] >= len(rows)
    assert count["encode"] * 20 == count["image_prefill"]
    assert total(final, "sluice_engine_image_cache_queries") >= count["image_prefill"]
    assert secs["decode"] > 0 and secs["encode"] > 0 and all(v >= 0 for v in secs.values())


def test_the_final_metrics_say_no_request_runs_or_waits(sluice, tmp_path):
    # The engine's stats held a step old (its loop paused after the step
    # that finished the last request, before it published them), as a busy
    # machine holds them: _metrics.prom said 1 (or 2) requests were running
    # once the job had ended, a run in three.
    images = sample_images()[:2]
    out = tmp_path / "out"
    env = dict(os.environ, SLUICE_TEST_FAULTS="engine.step=sleep:400")
    r = subprocess.run([str(sluice.binary), "caption", *map(str, images), "-o", str(out),
                        "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                        "--max-tokens", "2", "--metrics-addr", "off", "--show", "0"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_rows(out)) == len(images)
    final = families((out / "_metrics.prom").read_text())
    assert total(final, "vllm:num_requests_running") == 0
    assert total(final, "vllm:num_requests_waiting") == 0


def test_metrics_can_be_turned_off_and_a_taken_port_is_an_error(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "a", "--max-tokens", "2", "--metrics-addr", "off")
    assert r.returncode == 0 and "metrics at" not in r.stderr
    assert (tmp_path / "a" / "_metrics.prom").exists()  # the record is still written
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = sluice.caption(SAMPLES, tmp_path / "b", "--max-tokens", "2",
                           "--metrics-addr", f"127.0.0.1:{taken}")
    assert r.returncode == 2 and str(taken) in r.stderr and "--metrics-addr" in r.stderr
    # Refused before the output folder is made: nothing is left to clean up
    # (it used to be created, with an empty ledger, before the address was tried).
    assert not (tmp_path / "b").exists()


def test_the_metrics_line_names_the_host_it_serves_on(sluice, tmp_path):
    """--metrics-addr [::1]:0 serves on IPv6 loopback: the line printed
    names that host (it said 127.0.0.1 whatever the address, a URL that went
    nowhere), and the URL answers while the run waits on an image."""
    import http.server
    import re
    import socket
    import subprocess
    import threading
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    release = threading.Event()
    jpeg = (SAMPLES / "camera.jpg").read_bytes()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            release.wait(120)  # the run cannot end before the test fetched
            self.send_response(200)
            self.send_header("Content-Length", str(len(jpeg)))
            self.end_headers()
            self.wfile.write(jpeg)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f'{{"image": "http://127.0.0.1:{server.server_address[1]}/a.jpg"}}\n')
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([str(sluice.binary), "caption", str(manifest), "-o", str(tmp_path / "o"),
                                 "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                                 "--max-tokens", "2", "--metrics-addr", "[::1]:0"], stderr=err)
    try:
        m = None
        for _ in range(600):
            m = re.search(r"metrics at http://(\S+?):(\d+)/metrics, live page at http://(\S+?):\d+/",
                          err_path.read_text())
            if m or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert m, err_path.read_text()
        assert m.group(1) == m.group(3) == "[::1]", m.group(0)
        with urllib.request.urlopen(f"http://[::1]:{m.group(2)}/metrics", timeout=30) as resp:
            assert b"sluice_rows_read_total" in resp.read()
    finally:
        release.set()
        proc.wait(timeout=300)
        server.shutdown()
    assert proc.returncode == 0, err_path.read_text()


def test_idle_clients_cannot_take_the_runs_file_descriptors(sluice_bin, tmp_path):
    """A client that opens hundreds of connections to the metrics port and
    leaves them idle: the server holds a bounded number (64, or an eighth of
    RLIMIT_NOFILE), the rest wait unaccepted in the listen backlog. Under a
    soft limit of 256 descriptors, 300 held connections used to take every
    one the run had left, and its rows failed to decode with "cannot open:
    Too many open files" (80 of 150 rows under the usual 1024 with 1,100
    connections). The run must caption every row."""
    import re
    import resource
    import socket
    import subprocess
    import threading

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    src = tmp_path / "in"
    n = sample_copies(src, 10)
    out = tmp_path / "out"
    err_path = tmp_path / "sluice.stderr"
    held = []
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [str(sluice_bin), "caption", str(src), "-o", str(out), "--model", str(TINY / "model.gguf"),
             "--mmproj", str(TINY / "mmproj.gguf"), "--metrics-addr", "127.0.0.1:0",
             "--max-tokens", "8", "--show", "0"],
            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=low_nofile)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", err_path.read_text())
            port = int(m.group(1)) if m else time.sleep(0.02)
        assert port, err_path.read_text()[-2000:]
        def hold():  # blocking connects: the backlog's overflow waits, then gives up
            while len(held) < 300 and proc.poll() is None:
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
                except OSError:
                    pass
        holder = threading.Thread(target=hold)
        holder.start()
        busy = proc.poll() is None
        rc = proc.wait(timeout=600)  # held all along: the rows decode meanwhile
        holder.join(timeout=10)
    finally:
        for s in held:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = err_path.read_text(errors="replace")
    assert busy, "the run ended before the connections were opened: make it longer"
    assert rc == 0 and "Too many open files" not in log, log[-2000:]
    rows = read_rows(out)
    assert len(rows) == n and not [r for r in rows if r.get("error")], log[-2000:]


def test_a_model_name_that_is_not_utf8_does_not_stop_the_run(sluice, tmp_path):
    """A GGUF's general.name is bytes (and llama.cpp cuts a long one at 255
    bytes, maybe inside a character). It is the model_name label of the
    engine metrics, which must be UTF-8: such a name stopped the run before
    any row ("stage 'engine' could not start: metric vllm:num_requests_running:
    value of label model_name is not valid UTF-8", exit 1). Now the run goes
    on, the label, the live page's model and _summary.json show U+FFFD for the
    bad byte, and the exposition's escapes (quote, backslash, newline) parse."""
    import json
    data = (TINY / "model.gguf").read_bytes()
    odd = b'q"\\\n\xff</script>abcd'  # as long as the name it replaces
    assert data.count(b"sluice-tiny-random") == 1 and len(odd) == len(b"sluice-tiny-random")
    model = tmp_path / "odd.gguf"
    model.write_bytes(data.replace(b"sluice-tiny-random", odd))
    shown = 'q"\\\n\ufffd</script>abcd'
    src = tmp_path / "in"
    n = sample_copies(src, 4)
    out = tmp_path / "out"
    with BackgroundRun(sluice, src, out, "--model", model, "--max-tokens", "16", "--parallel", "1",
                       "--show", "0", log_dir=tmp_path) as run:
        port = run.port()
        status = {}
        deadline = time.monotonic() + 60
        while not status.get("model") and time.monotonic() < deadline and run.proc.poll() is None:
            try:
                status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status",
                                                          timeout=10))
            except OSError:
                pass
            time.sleep(0.1)
        rc = run.proc.wait(timeout=600)
    assert rc == 0, run.log()
    assert status.get("model") == shown, (status, run.log())
    final = families((out / "_metrics.prom").read_text())
    assert {s.labels["model_name"] for s in final["vllm:generation_tokens"].samples} == {shown}
    assert total(final, "vllm:request_success") == n
    assert json.loads((out / "_summary.json").read_text())["model"] == shown


def test_junk_requests_do_not_flood_the_log(sluice, tmp_path):
    """libmicrohttpd warns of each malformed request: a client sending junk
    (a port scanner, a health check speaking another protocol) put a line on
    the run's stderr per request (3,000 requests, 3,000 lines, and the server
    answered 6 times slower for writing them). The first 5 are shown, then
    at most one a minute, and the count of the rest when the run ends."""
    import socket
    with BackgroundRun(sluice, SAMPLES, tmp_path / "out", "--max-tokens", "8", "--parallel", "1",
                       "--show", "0", log_dir=tmp_path) as run:
        port = run.port()
        sent = 0
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /metrics\r\n\r\n")  # HTTP/0.9: 400
                    assert s.recv(100).startswith(b"HTTP/1.1 400")
                    sent += 1
            except ConnectionRefusedError:
                break  # the run ended
        rc = run.proc.wait(timeout=600)
    log = run.log(10**6)
    assert rc == 0, log[-2000:]
    lines = [line for line in log.splitlines() if "metrics server:" in line]
    assert sent > 5, f"the run ended after {sent} requests: make it longer"
    assert len(lines) == 6, lines
    assert "at most one a minute" in lines[4]
    assert lines[5].endswith(f"metrics server: {sent - 5} more messages not shown"), lines


def test_a_busy_default_port_is_a_warning_that_says_what_to_change(sluice, tmp_path):
    """Without --metrics-addr, a second run on the machine meets the first
    one's 127.0.0.1:9797: the run goes on, and the warning says what it
    loses and what to pass (it said only "not serving metrics: ... Address
    already in use")."""
    import socket
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 9797))
        holder.listen()
    except OSError:
        pass  # something holds it already: the same case
    try:
        r = sluice.run("caption", SAMPLES, "-o", tmp_path / "out", "--dry-run", "--show", "0")
    finally:
        holder.close()
    assert r.returncode == 0, r.stderr
    warn = [line for line in r.stderr.splitlines() if "not serving metrics" in line]
    assert len(warn) == 1 and "127.0.0.1:9797" in warn[0] and "Address already in use" in warn[0]
    assert "without /metrics and the live page" in warn[0] and "--metrics-addr 127.0.0.1:0" in warn[0]
    assert (tmp_path / "out" / "_metrics.prom").exists()


def test_a_busy_address_given_says_it_once_and_the_way_on(sluice, tmp_path):
    """An address given on purpose that another process holds ends the run
    before it writes (exit 2). It said the address twice
    ('--metrics-addr A: metrics address "A": cannot listen: ...') and
    not that a job file's metrics.optional: true runs on without metrics."""
    import socket
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    addr = f"127.0.0.1:{holder.getsockname()[1]}"
    job = tmp_path / "job.yaml"
    job.write_text(f"metrics:\n  addr: {addr}\n")
    try:
        r = sluice.run("caption", SAMPLES, "-o", tmp_path / "out", "--dry-run",
                       "--metrics-addr", addr)
        from_file = sluice.run("run", job, SAMPLES, "-o", tmp_path / "out2", "--dry-run")
    finally:
        holder.close()
    for run, flag in ((r, "--metrics-addr"), (from_file, "metrics.addr")):
        assert run.returncode == 2, run.stderr
        said = [line for line in run.stderr.splitlines() if "Address already in use" in line]
        assert len(said) == 1 and said[0].count(addr) == 1, run.stderr
        assert f"{flag} {addr}: cannot listen: Address already in use; " in said[0], said
        assert "metrics.optional: true" in said[0] and "'off'" in said[0], said
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_a_loopback_server_answers_only_to_its_address_or_localhost(sluice, tmp_path):
    """The live page serves the run's captions and thumbnails. A web site the
    user opens can point its own name at 127.0.0.1 (DNS rebinding) and read
    http://its-name:PORT/api/gallery as same-origin: every route answered
    whatever the Host. On a loopback address, a Host that is a name other
    than localhost is refused (403); addresses, localhost and a request
    without Host (HTTP/1.0) are served."""
    import http.client
    import socket

    def get(port, path, host):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.putrequest("GET", path, skip_host=True)
        c.putheader("Host", host)
        c.endheaders()
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    with BackgroundRun(sluice, SAMPLES, tmp_path / "out", "--max-tokens", "8", "--parallel", "1",
                       "--show", "0", log_dir=tmp_path) as run:
        port = run.port()
        for path in ("/", "/api/gallery", "/api/status", "/metrics", "/thumb/0.jpg"):
            for host in (f"rebound.example:{port}", "rebound.example", f"127.0.0.1.nip.io:{port}"):
                status, body = get(port, path, host)
                assert status == 403 and b"loopback" in body, (path, host, status)
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", f"[::1]:{port}"):
            assert get(port, "/api/status", host)[0] == 200, host
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /api/status HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        assert run.proc.poll() is None, run.log()  # it all ran against the live server


def shortest_digits(token: str) -> str:
    """A number's significant digits (no sign, point, exponent, or leading
    and trailing zeros)."""
    return token.split("e")[0].split("E")[0].lstrip("-").replace(".", "").strip("0")


def test_the_live_feeds_reals_are_their_shortest_text(sluice, tmp_path):
    """/api/status was written by json_dumps, every real with 17 digits
    (a time of 0.25 s as 0.25, but 1.1 as 1.1000000000000001): each real
    in the feed is now the shortest text that reads back as it, as every
    JSON sluice writes (Python's repr is the shortest)."""
    import re
    src = tmp_path / "in"
    sample_copies(src, 6)
    texts = []
    with BackgroundRun(sluice, src, tmp_path / "out", "--max-tokens", "16", "--parallel", "1",
                       "--show", "0", log_dir=tmp_path) as run:
        port = run.port()
        while run.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status",
                                            timeout=10) as r:
                    texts.append(r.read().decode())
            except OSError:
                pass
            time.sleep(0.05)
        assert run.proc.wait(timeout=600) == 0, run.log()
    unquoted = [re.sub(r'"(?:[^"\\]|\\.)*"', '""', t) for t in texts]  # no digits of names
    reals = [t for text in unquoted for t in re.findall(r"-?\d+\.\d+(?:e-?\d+)?|-?\d+e-?\d+", text)]
    assert len(reals) > 20, texts[-1:]
    longer = [t for t in reals if shortest_digits(t) != shortest_digits(repr(float(t)))]
    assert not longer, longer[:10]



def get_status(url, headers=None):
    """(HTTP status, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_token_file_with_a_nul_byte_is_refused(sluice, tmp_path):
    """A NUL in the first line is no letter of a token: read_token's check
    let it through (strchr finds the terminator) and the token kept was
    what came before it, "abc" from a 19-byte line, shorter than the 16
    characters the file must hold. Refused (exit 2) as another byte."""
    tfile = tmp_path / "token"
    tfile.write_bytes(b"abc" + b"\0" * 16 + b"\n")
    tfile.chmod(0o600)
    r = sluice.caption(SAMPLES, tmp_path / "refused", "--dry-run", "--metrics-addr",
                       "127.0.0.1:0", "--metrics-token-file", tfile)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--metrics-token-file {tfile}" in r.stderr and "another byte" in r.stderr, \
        r.stderr[-2000:]
    assert not (tmp_path / "refused").exists()


def test_a_token_file_keeps_other_local_users_out(sluice, tmp_path):
    """On a shared node every local user reaches 127.0.0.1. With
    --metrics-token-file every route answers 401 to a request without the
    token; the header (a real Prometheus' credentials_file) or ?token= (a
    browser) gets in. The file must be the user's alone, and the token is
    never printed."""
    import secrets
    import threading

    from openai_helpers import FakeServer, completion
    from prom import Prometheus

    token = secrets.token_hex(24)
    tfile = tmp_path / "token"
    for text, mode, said in ((token, 0o644, "chmod 600"), ("short", 0o600, "openssl rand"),
                             ("has space " + token, 0o600, "another byte")):
        tfile.write_text(text + "\n")
        tfile.chmod(mode)
        r = sluice.caption(SAMPLES, tmp_path / "refused", "--metrics-addr", "127.0.0.1:0",
                           "--metrics-token-file", tfile)
        assert r.returncode == 2, (text, r.stderr[-2000:])
        assert f"--metrics-token-file {tfile}" in r.stderr and said in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "refused").exists()  # refused before anything was made
    # checked even when no server starts: the mistake shows in this run
    r = sluice.caption(SAMPLES, tmp_path / "refused", "--metrics-addr", "off",
                       "--metrics-token-file", tmp_path / "missing")
    assert r.returncode == 2 and f"--metrics-token-file {tmp_path / 'missing'}: No such file" \
        in r.stderr, r.stderr[-2000:]
    tfile.write_text(token + "\n")
    tfile.chmod(0o600)

    release = threading.Event()  # the engine answers once the checks are done
    err_path = tmp_path / "sluice.stderr"
    with FakeServer(lambda h, n, body: (release.wait(60), completion(h)), limit_s=90) as engine, \
            open(err_path, "w") as err:
        proc = subprocess.Popen(
            [str(sluice.binary), "caption", str(SAMPLES), "-o", str(tmp_path / "out"),
             "--engine", "openai", "--endpoint", engine.url, "--show", "0",
             "--metrics-addr", "127.0.0.1:0", "--metrics-token-file", str(tfile)],
            stdout=subprocess.DEVNULL, stderr=err)
        try:
            base = metrics_base(proc, err_path)
            port = int(base.rsplit(":", 1)[1])
            for path in ("/", "/api/status", "/api/gallery", "/metrics", "/thumb/0.jpg"):
                for headers in ({}, {"Authorization": "Bearer " + token[:-1]}):
                    status, body = get_status(base + path, headers)
                    assert status == 401 and b"--metrics-token-file" in body, (path, headers)
            status, body = get_status(base + "/metrics", {"Authorization": "Bearer " + token})
            assert status == 200 and b"vllm:num_requests_running" in body
            status, body = get_status(f"{base}/api/status?token={token}")
            assert status == 200 and b"rows_done" in body
            # Two scrape jobs of the one target: only the one with the token is up.
            with Prometheus(tmp_path / "prom", {"with_token": [f"127.0.0.1:{port}"],
                                                "without": [f"127.0.0.1:{port}"]},
                            bearer_files={"with_token": tfile}) as prom:
                prom.wait_ready()

                def scraped():
                    targets = prom.api("targets")["activeTargets"]
                    seen = {t["labels"]["job"]: t for t in targets if t["health"] != "unknown"}
                    return seen if len(seen) == 2 else None
                seen = prom.wait_for("both jobs scraped", scraped)
                assert seen["with_token"]["health"] == "up", seen
                assert seen["without"]["health"] == "down", seen
                assert "401" in seen["without"]["lastError"], seen
                assert prom.wait_for("a series", lambda: prom.query(
                    'vllm:num_requests_running{job="with_token"}'))
            assert proc.poll() is None, err_path.read_text()  # all against the running job
        finally:
            release.set()
        assert proc.wait(timeout=120) == 0, err_path.read_text()
    log = err_path.read_text()
    assert token not in log
    assert f"live page at {base}/?token=TOKEN (TOKEN: the first line of {tfile})" in log, log
