"""The openai engine against real llama-server processes (the tiny model):
captions equal to what the server gives each request alone, failover when a
server dies, retries through a fault-injecting proxy without losing or
duplicating a row, and fast, clear failures for 401 (at start and mid-run), 400 and an endpoint
that does not answer; against a fake server, that no server can hang a run
(a Retry-After of a day, 429 forever, an answer without end)."""
import base64
import hashlib
import http.server
import io
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
from PIL import Image

from conftest import SAMPLES, read_rows, sample_copies, sample_images, sanitized, sigint_timed
from localserver import LocalServer, free_port
from openai_helpers import (FakeServer, LlamaServer, Proxy, chat, completion, endless,
                            metric_sum, reply, scrape, too_many_requests)

EXPECTED_IDS = {str(p.relative_to(SAMPLES)) for p in sample_images()}


def caption(sluice, inp, out, *extra, timeout=600):
    return sluice.run("caption", inp, "-o", out, "--engine", "openai", *extra, timeout=timeout)


def ok_rows(out):
    rows = read_rows(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a row was written twice"
    return rows


def many_inputs(tmp_path, copies):
    """The samples `copies` times over, in sub-folders (distinct ids)."""
    sample_copies(tmp_path / "many", copies)
    return tmp_path / "many"


def test_captions_equal_single_requests_to_the_same_server(sluice, llama_prefix, tmp_path):
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 4) as server, \
            Proxy(server.url) as proxy:
        r = caption(sluice, SAMPLES, out, "--endpoint", proxy.url, "--max-in-flight", "4",
                    "--max-tokens", "16", "--system", "You describe images.",
                    "--jpeg-edge", "256", "--jpeg-quality", "80", "--stop", "zzz",
                    "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        rows = ok_rows(out)
        assert {row["id"] for row in rows} == EXPECTED_IDS
        assert all(row["error"] is None and row["caption"] for row in rows)

        sent = [e for e in proxy.log if e["status"] == 200]
        assert len(sent) == len(rows) == len(proxy.log), "one request per row, no retries"
        replies = {}
        for e in sent:
            body = json.loads(e["body"])
            system, user = body["messages"]
            assert system == {"role": "system", "content": "You describe images."}
            image, text = user["content"]
            assert text == {"type": "text", "text": "Describe this image in one sentence."}
            url = image["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            jpeg = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert jpeg.format == "JPEG" and max(jpeg.size) <= 256
            assert body["max_tokens"] == 16 and body["temperature"] == 0
            assert body["stop"] == ["zzz"] and isinstance(body["seed"], int)
            # The same bytes, alone on the server: the same answer.
            status, alone = chat(server.url, e["body"])
            assert status == 200
            assert alone["choices"][0]["message"]["content"] == \
                e["answer"]["choices"][0]["message"]["content"]
            key = e["answer"]["choices"][0]["message"]["content"]
            replies[key] = replies.get(key, 0) + 1
    captions = {}
    for row in rows:
        captions[row["caption"]] = captions.get(row["caption"], 0) + 1
    assert captions == replies, "each row holds the answer its request got"
    by_usage = sorted((e["answer"]["usage"]["prompt_tokens"],
                       e["answer"]["usage"]["completion_tokens"]) for e in sent)
    assert by_usage == sorted((row["prompt_tokens"], row["generated_tokens"]) for row in rows)


def test_a_server_killed_mid_run_loses_no_row(sluice, llama_prefix, tmp_path):
    inp = many_inputs(tmp_path, 6)
    expected = {str(p.relative_to(inp)) for p in inp.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    port = free_port()
    with LlamaServer(llama_prefix, tmp_path / "a.log", 2) as a, \
            LlamaServer(llama_prefix, tmp_path / "b.log", 2) as b:
        proc = subprocess.Popen(
            [str(sluice.binary), "caption", str(inp), "-o", str(out), "--engine", "openai",
             "--endpoint", a.url, "--endpoint", b.url, "--max-in-flight", "2",
             "--max-tokens", "24", "--metrics-addr", f"127.0.0.1:{port}", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = scrape(port)
                done = metric_sum(text, "sluice_rows_done_total")
                if done >= 10 and metric_sum(text, "sluice_http_requests_total",
                                             endpoint=a.url) > 0:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert proc.poll() is None and done < len(expected), "the run ended before the kill"
        a.kill()
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = ok_rows(out)
    assert {row["id"] for row in rows} == expected
    assert all(row["error"] is None for row in rows)
    prom = (out / "_metrics.prom").read_text()
    assert metric_sum(prom, "sluice_http_requests_total", endpoint=b.url, code="200") > \
        metric_sum(prom, "sluice_http_requests_total", endpoint=a.url, code="200")
    assert metric_sum(prom, "vllm:request_success_total") == len(expected)


# Per request body: the faults its first attempts meet (none for a third).
FAULTS = [[], ["429"], ["500", "503"], ["drop"], ["hang"], ["503", "429"], [], ["drop", "500"]]


def plan(sha):
    return FAULTS[int(sha[:8], 16) % len(FAULTS)]


def test_faults_are_retried_without_losing_or_duplicating_rows(sluice, llama_prefix, tmp_path):
    inp = many_inputs(tmp_path, 2)
    expected = {str(p.relative_to(inp)) for p in inp.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 4) as server, \
            Proxy(server.url, plan, hang_s=3.0) as proxy:
        r = caption(sluice, inp, out, "--endpoint", proxy.url, "--max-in-flight", "4",
                    "--max-tokens", "8", "--request-timeout", "1.5", "--max-attempts", "4",
                    "--endpoint-cooldown", "0.5", "--metrics-addr", "off", timeout=300)
        assert r.returncode == 0, r.stderr
        log = list(proxy.log)
    rows = ok_rows(out)
    assert {row["id"] for row in rows} == expected
    assert all(row["error"] is None for row in rows)
    injected = [e for e in log if e["fault"]]
    kinds = {e["fault"] for e in injected}
    assert kinds == {"429", "500", "503", "drop", "hang"}, "every kind of fault was met"
    # Each body was answered exactly once, after exactly its planned faults.
    by_sha = {}
    for e in log:
        by_sha.setdefault(e["sha"], []).append(e)
    assert len(by_sha) == len(rows)
    for sha, entries in by_sha.items():
        assert [e["fault"] for e in entries] == plan(sha) + [None]
        assert entries[-1]["status"] == 200
    # Retry-After: 1 was honoured.
    for entries in by_sha.values():
        for first, second in zip(entries, entries[1:]):
            if first["fault"] == "429":
                assert second["t"] - first["t"] >= 0.95
    prom = (out / "_metrics.prom").read_text()
    assert metric_sum(prom, "sluice_http_retries_total", endpoint=proxy.url) == len(injected)
    for code in ("429", "500", "503"):
        assert metric_sum(prom, "sluice_http_requests_total", endpoint=proxy.url, code=code) == \
            sum(e["fault"] == code for e in injected)
    assert metric_sum(prom, "sluice_http_requests_total", endpoint=proxy.url, code="0") == \
        sum(e["fault"] in ("drop", "hang") for e in injected)
    assert metric_sum(prom, "sluice_http_requests_total", endpoint=proxy.url, code="200") == \
        len(rows)


def test_a_server_slower_than_the_timeout_names_the_flag_to_raise(sluice, tmp_path):
    """An attempt past --request-timeout failed with curl's words alone
    ('Operation timed out after 1000 milliseconds with 0 bytes
    received'), naming no setting: the row's error now says which flag
    bounds each attempt. The server holds every request until sluice
    hangs up, so no answer can come in time whatever the load. Every row
    says so: libcurl rounds its elapsed milliseconds up and may end an
    attempt just before the engine's clock reaches the limit, and about
    one such row in six went without the flag's name."""
    def never(h, n, body):
        h.connection.settimeout(20)
        try:
            h.connection.recv(1)  # b"" once sluice gives the attempt up
        except OSError:
            pass
        h.close_connection = True

    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(128):
        Image.new("RGB", (32, 24), (200, 30, k)).save(inp / f"a{k:02d}.jpg")
    with FakeServer(never) as fake:
        r = caption(sluice, inp, tmp_path / "out", "--endpoint", fake.url, "--request-timeout",
                    "0.5", "--max-attempts", "1", "--max-in-flight", "64", "--endpoint-failures",
                    "1000", "--metrics-addr", "off", timeout=120)
    assert r.returncode == 3, r.stderr
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 128 and all(row["error_stage"] == "engine" for row in rows)
    for row in rows:  # curl's words: "Operation timed out ...", or "Timeout was reached"
        assert "imeout" in row["error"].replace("timed out", "Timeout"), row["error"]
        assert "(--request-timeout 0.5 s, each attempt's limit" in row["error"], row["error"]
    assert "--request-timeout 0.5 s" in r.stderr


STREAM_FAULTS = [[], ["cut"], [], ["500", "cut"]]


def stream_plan(sha):
    return STREAM_FAULTS[int(sha[:8], 16) % len(STREAM_FAULTS)]


def test_streamed_answers_match_and_time_their_tokens(sluice, llama_prefix, tmp_path):
    inp = many_inputs(tmp_path, 1)
    common = ["--max-tokens", "12", "--max-in-flight", "4", "--metrics-addr", "off"]
    with LlamaServer(llama_prefix, tmp_path / "server.log", 4) as server, \
            Proxy(server.url, stream_plan) as proxy:
        plain = caption(sluice, inp, tmp_path / "plain", "--endpoint", server.url, *common)
        assert plain.returncode == 0, plain.stderr
        r = caption(sluice, inp, tmp_path / "streamed", "--endpoint", proxy.url, "--stream",
                    "--endpoint-cooldown", "0.2", *common)
        assert r.returncode == 0, r.stderr
        log = list(proxy.log)
    want = {row["id"]: row for row in ok_rows(tmp_path / "plain")}
    got = {row["id"]: row for row in ok_rows(tmp_path / "streamed")}
    assert got.keys() == want.keys() and len(got) == len(sample_images())
    for row in got.values():
        t = row["timings"]
        assert row["error"] is None
        assert 0 < t["ttft_ms"] <= t["ttft_ms"] + t["generate_ms"] <= t["total_ms"] + 1
    assert all(row["timings"]["ttft_ms"] == 0 for row in want.values())  # unknown unstreamed
    assert {e["fault"] for e in log} == {None, "cut", "500"}
    # Each row holds what the server streamed to the attempt that finished:
    # its chunks' content joined, the last finish_reason, usage's count; a
    # stream cut halfway was asked again, and nothing of it was kept.
    streamed = []
    for e in log:
        body = json.loads(e["body"])
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        if e["status"] != 200:
            continue
        text, finish, tokens = "", None, None
        for line in e["answer"].decode().splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                text += (choice.get("delta") or {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
        streamed.append((text, finish, tokens))
    rows = [(r["caption"], r["finish_reason"], r["generated_tokens"]) for r in got.values()]
    assert sorted(rows) == sorted(streamed)
    by_sha = {}
    for e in log:
        by_sha.setdefault(e["sha"], []).append(e["fault"])
    assert all(faults == stream_plan(sha) + [None] for sha, faults in by_sha.items())
    prom = (tmp_path / "streamed" / "_metrics.prom").read_text()
    n = len(got)
    ep = {"endpoint": proxy.url}
    assert metric_sum(prom, "vllm:time_to_first_token_seconds_count", **ep) == n
    assert metric_sum(prom, "vllm:e2e_request_latency_seconds_count", **ep) == n
    assert metric_sum(prom, "vllm:inter_token_latency_seconds_count", **ep) == \
        sum(max(row["generated_tokens"] - 1, 0) for row in got.values())
    assert metric_sum(prom, "vllm:generation_tokens_total", **ep) == \
        sum(row["generated_tokens"] for row in got.values())
    plain_prom = (tmp_path / "plain" / "_metrics.prom").read_text()
    assert metric_sum(plain_prom, "vllm:time_to_first_token_seconds_count") == 0


def test_send_original_sends_jpeg_and_png_files_as_they_are(sluice, llama_prefix, tmp_path):
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url) as proxy:
        r = caption(sluice, SAMPLES, out, "--endpoint", proxy.url, "--send-original",
                    "--max-tokens", "4", "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        log = list(proxy.log)
    rows = ok_rows(out)
    assert {row["id"] for row in rows} == EXPECTED_IDS and len(log) == len(rows)
    files = {p.read_bytes(): p.suffix.lower() for p in sample_images()}
    kinds = {}
    for e in log:
        url = json.loads(e["body"])["messages"][0]["content"][0]["image_url"]["url"]
        head, data = url.split(",", 1)
        sent = base64.b64decode(data)
        mime = head[len("data:"):-len(";base64")]
        if sent in files and files[sent] in (".jpg", ".jpeg", ".png"):
            # the file itself, with its own type
            assert mime == ("image/png" if files[sent] == ".png" else "image/jpeg"), head
            kinds[files[sent]] = kinds.get(files[sent], 0) + 1
        else:
            # WebP and GIF: re-encoded, as without the option
            assert mime == "image/jpeg" and sent[:3] == b"\xff\xd8\xff" and sent not in files
            kinds["re-encoded"] = kinds.get("re-encoded", 0) + 1
    want_re = sum(1 for p in sample_images() if p.suffix.lower() not in (".jpg", ".jpeg", ".png"))
    assert kinds.get("re-encoded", 0) == want_re > 0
    assert kinds.get(".png", 0) > 0 and kinds.get(".jpg", 0) > 0


def test_wrong_api_key_fails_at_start_with_the_servers_message(sluice, llama_prefix, tmp_path):
    with LlamaServer(llama_prefix, tmp_path / "server.log", 1, "--api-key",
                     "s3cret-key") as server:
        env_bad = {"SLUICE_TEST_KEY": "wrong-key-value"}
        r = subprocess.run([str(sluice.binary), "caption", str(SAMPLES), "-o",
                            str(tmp_path / "bad"), "--engine", "openai", "--endpoint", server.url,
                            "--api-key-env", "SLUICE_TEST_KEY", "--metrics-addr", "off"],
                           capture_output=True, text=True, timeout=120,
                           env={**__import__("os").environ, **env_bad})
        assert r.returncode == 2, r.stderr
        assert "Invalid API Key" in r.stderr and "HTTP 401" in r.stderr
        assert "wrong-key-value" not in r.stderr + r.stdout, "the key is never printed"
        r = subprocess.run([str(sluice.binary), "caption", str(SAMPLES), "-o",
                            str(tmp_path / "good"), "--engine", "openai", "--endpoint",
                            server.url, "--api-key-env", "SLUICE_TEST_KEY", "-n", "4",
                            "--metrics-addr", "off"],
                           capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "SLUICE_TEST_KEY": "s3cret-key"})
        assert r.returncode == 0, r.stderr
        assert "s3cret-key" not in r.stderr + r.stdout
        assert {row["id"] for row in ok_rows(tmp_path / "good")} == EXPECTED_IDS


def test_a_400_fails_each_row_at_once_with_the_servers_message(sluice, llama_prefix, tmp_path):
    fmt = tmp_path / "format.json"
    fmt.write_text(json.dumps({"type": "nonsense"}))
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server:
        t0 = time.monotonic()
        r = caption(sluice, SAMPLES, out, "--endpoint", server.url, "--response-format", fmt,
                    "--metrics-addr", "off")
        took = time.monotonic() - t0
    assert r.returncode == 3, r.stderr  # the run finished; every row failed
    rows = ok_rows(out)
    assert {row["id"] for row in rows} == EXPECTED_IDS
    for row in rows:
        assert row["caption"] is None and row["error_stage"] == "engine"
        assert "HTTP 400" in row["error"] and "response_format type must be one of" in row["error"]
        assert row["id"] in row["error"]  # the row id names the input
    prom = (out / "_metrics.prom").read_text()
    assert metric_sum(prom, "sluice_http_retries_total") == 0
    assert metric_sum(prom, "sluice_http_requests_total", code="400") == len(rows)
    assert took < 60


def test_response_format_is_passed_through(sluice, llama_prefix, tmp_path):
    fmt = tmp_path / "format.json"
    fmt.write_text(json.dumps({"type": "json_object"}))
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url) as proxy:
        r = caption(sluice, SAMPLES, out, "--endpoint", proxy.url, "--response-format", fmt,
                    "-n", "4", "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        assert all(json.loads(e["body"])["response_format"] == {"type": "json_object"}
                   for e in proxy.log)


def test_unreachable_endpoint_is_a_configuration_error(sluice, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = caption(sluice, SAMPLES, tmp_path / "out", "--endpoint", dead, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "no endpoint answers" in r.stderr and dead in r.stderr
    assert "Connection refused" in r.stderr or "Couldn't connect" in r.stderr
    assert time.monotonic() - t0 < 30
    r = caption(sluice, SAMPLES, tmp_path / "out2", "--metrics-addr", "off")
    assert r.returncode == 2 and "--endpoint" in r.stderr


def test_every_endpoint_down_past_the_deadline_stops_the_job(sluice, llama_prefix, tmp_path):
    inp = many_inputs(tmp_path, 6)
    out = tmp_path / "out"
    port = free_port()
    with LlamaServer(llama_prefix, tmp_path / "a.log", 1) as a:
        proc = subprocess.Popen(
            [str(sluice.binary), "caption", str(inp), "-o", str(out), "--engine", "openai",
             "--endpoint", a.url, "--max-in-flight", "1", "--max-tokens", "24",
             "--give-up-after", "2", "--endpoint-cooldown", "0.5", "--max-attempts", "1000",
             "--metrics-addr", f"127.0.0.1:{port}", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if metric_sum(scrape(port), "sluice_rows_done_total") >= 5:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        a.kill()
        t_kill = time.monotonic()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "every endpoint has been failing" in err
    assert time.monotonic() - t_kill < 60
    rows = read_rows(out)
    done = [row for row in rows if row["error"] is None]
    assert len(done) >= 5, "rows finished before the servers went are kept"


@pytest.mark.skipif(sanitized(), reason="a throughput measurement: under ASan the client's own "
                    "cost decides it (the plain build's run checks it)")
def test_adaptive_raises_the_limit_while_throughput_rises(sluice, llama_prefix, tmp_path):
    inp = many_inputs(tmp_path, 12)  # several 2 s measuring windows
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 4) as server:
        r = caption(sluice, inp, out, "--endpoint", server.url, "--adaptive",
                    "--max-in-flight", "1", "--max-tokens", "16", "--metrics-addr", "off",
                    timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(ok_rows(out)) == sum(1 for p in inp.rglob("*") if p.is_file())
    prom = (out / "_metrics.prom").read_text()
    # From one request at a time, a server with 4 slots is worth more.
    assert metric_sum(prom, "sluice_http_in_flight_limit", endpoint=server.url) > 1
    assert metric_sum(prom, "sluice_http_in_flight", endpoint=server.url) == 0
    # The same run with a ceiling of 1 never leaves it.
    with LlamaServer(llama_prefix, tmp_path / "server2.log", 4) as server:
        r = caption(sluice, inp, tmp_path / "capped", "--endpoint", server.url, "--adaptive",
                    "--max-in-flight", "1", "--adaptive-max", "1", "--max-tokens", "16",
                    "--metrics-addr", "off", timeout=600)
    assert r.returncode == 0, r.stderr
    prom = (tmp_path / "capped" / "_metrics.prom").read_text()
    assert metric_sum(prom, "sluice_http_in_flight_limit", endpoint=server.url) == 1
    r = caption(sluice, inp, tmp_path / "bad", "--endpoint", server.url, "--adaptive",
                "--max-in-flight", "4", "--adaptive-max", "2")
    assert r.returncode == 2 and "--adaptive-max 2 is below --max-in-flight 4" in r.stderr


def always_500(sha):
    return ["500"] * 100


@pytest.mark.parametrize("failures", [1, 2])
def test_endpoint_failures_sets_how_many_faults_take_an_endpoint_out(sluice, llama_prefix,
                                                                      tmp_path, failures):
    # A broken endpoint (every answer a 500) beside a good one, one request at
    # a time each: the broken one gets exactly `failures` requests before its
    # long cool-down, and their rows are retried on the good one.
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url, always_500) as broken:
        r = caption(sluice, SAMPLES, out, "--endpoint", broken.url, "--endpoint", server.url,
                    "--max-in-flight", "1", "--endpoint-failures", str(failures),
                    "--endpoint-cooldown", "600", "--max-tokens", "4", "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        log = list(broken.log)
    assert {row["id"] for row in ok_rows(out)} == EXPECTED_IDS
    assert [e["status"] for e in log] == [500] * failures
    assert f"out of rotation for 600 s after {failures} failures in a row" in r.stderr


# --- a server cannot hang a run (fake servers: no model needed) -------------


def few_inputs(tmp_path, n=4):
    root = tmp_path / "few"
    root.mkdir()
    for p in sample_images()[:n]:
        (root / p.name).symlink_to(p)
    return root


def against_fake(sluice, tmp_path, answer, n=2):
    """n images captioned into tmp_path/out by a FakeServer answering with
    `answer`: the run, its rows, the server's log and its URL."""
    inp = few_inputs(tmp_path, n)
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, tmp_path / "out", "--endpoint", fake.url, "--metrics-addr",
                    "off", timeout=60)
        log = list(fake.log)
    return r, ok_rows(tmp_path / "out"), log, fake.url


def test_a_retry_after_past_the_bound_is_not_obeyed(sluice, tmp_path):
    # Each request's first answer is a 429: half ask for a day (past the
    # 60 s bound: the client's own backoff instead), half for 2 s (obeyed).
    # The second attempt may also wait for a slot (each 429 burst halves
    # the in-flight limit), so a day's gap is bounded, not exact.
    asked = {}

    def answer(h, n, body):
        day = int(h.sha, 16) % 2
        if n == 0:
            asked[h.sha] = 86400 if day else 2
            return too_many_requests(h, 86400 if day else 2)
        completion(h)

    inp = many_inputs(tmp_path, 1)
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, tmp_path / "out", "--endpoint", fake.url, "--max-in-flight", "8",
                    "--metrics-addr", "off", timeout=90)
        log = list(fake.log)
    assert r.returncode == 0, r.stderr
    rows = ok_rows(tmp_path / "out")
    assert len(rows) == len(sample_images()) and all(row["caption"] for row in rows)
    first = {sha: t for t, sha, n in log if n == 0}
    second = {sha: t for t, sha, n in log if n == 1}
    assert first.keys() == second.keys() == asked.keys() and len(first) == len(rows)
    day = [second[sha] - first[sha] for sha in first if asked[sha] == 86400]
    two = [second[sha] - first[sha] for sha in first if asked[sha] == 2]
    assert day and two  # both kinds were met
    assert all(g < 10.0 for g in day), day  # a day: not obeyed
    assert all(1.9 <= g < 10.0 for g in two), two  # 2 s: obeyed


def test_endless_429s_stop_the_job_after_give_up_after(sluice, tmp_path):
    inp = many_inputs(tmp_path, 1)
    out = tmp_path / "out"
    with FakeServer(lambda h, n, body: too_many_requests(h)) as fake:
        t0 = time.monotonic()
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--give-up-after", "3",
                    "--max-attempts", "1000", "--metrics-addr", "off", timeout=90)
        took = time.monotonic() - t0
        log = list(fake.log)
    assert r.returncode == 1, r.stderr
    assert "every endpoint has been failing for 3 s" in r.stderr, r.stderr
    assert "HTTP 429: rate limited, slow down" in r.stderr and fake.url in r.stderr
    assert 3 <= took < 30
    assert len(log) > len(sample_images()), "the requests were retried until then"
    rows = read_rows(out) if (out / "part-00000.jsonl").exists() else []
    assert all(row["error"] and "every endpoint has been failing" in row["error"]
               for row in rows)


def test_a_busy_fleet_that_still_answers_is_not_given_up(sluice, tmp_path):
    # Every request is refused once (429), then answered in 0.3 s: the run
    # lasts several times --give-up-after with 429s all along, and goes on.
    def answer(h, n, body):
        if n == 0:
            return too_many_requests(h)
        completion(h, delay_s=0.3)

    inp = many_inputs(tmp_path, 3)
    t0 = time.monotonic()
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, tmp_path / "out", "--endpoint", fake.url, "--max-in-flight",
                    "2", "--give-up-after", "2", "--metrics-addr", "off", timeout=120)
        log = list(fake.log)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    rows = ok_rows(tmp_path / "out")
    assert len(rows) == 3 * len(sample_images()) and all(row["error"] is None for row in rows)
    assert sum(n == 0 for _, _, n in log) == len(rows)
    assert took > 3 * 2


CHUNK = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,' \
        b'"delta":{"content":"lorem ipsum dolor "}}]}\n\n'


@pytest.mark.parametrize("kind", ["stream", "body", "error"])
def test_an_answer_without_end_fails_the_row_at_its_bound(sluice, tmp_path, kind):
    # A server that ignores max_tokens and never stops: the row fails once
    # the answer passes what --max-tokens 8 can explain (64 KiB + 256 bytes
    # a token of text; 6 times that + 1 MiB of JSON), naming the row and the
    # endpoint; the same request is not asked again. An error answer without
    # end is kept only for its message (its first 64 KiB).
    def answer(h, n, body):
        if kind == "stream":
            assert body["stream"] is True
            endless(h, 200, b"", CHUNK, "text/event-stream", fake.limit_s)
        elif kind == "body":
            endless(h, 200, b'{"choices":[{"message":{"role":"assistant","content":"', b"lorem ",
                    "application/json", fake.limit_s)
        else:
            endless(h, 500, b"", b"overloaded ", "text/plain", fake.limit_s)

    inp = few_inputs(tmp_path)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        t0 = time.monotonic()
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--max-tokens", "8",
                    "--max-attempts", "2", "--endpoint-cooldown", "0.2", "--metrics-addr", "off",
                    *(["--stream"] if kind == "stream" else []), timeout=120)
        took = time.monotonic() - t0
        log = list(fake.log)
    assert r.returncode == 3, r.stderr
    rows = ok_rows(out)
    assert len(rows) == 4 and took < 15
    text_max = 64 * 1024 + 256 * 8
    for row in rows:
        assert row["caption"] is None and row["error_stage"] == "engine"
        assert row["id"] in row["error"] and fake.url in row["error"], row["error"]
        if kind == "stream":
            assert f"its text passed {text_max} bytes" in row["error"], row["error"]
        elif kind == "body":
            assert f"its body passed {6 * text_max + (1 << 20)} bytes" in row["error"], row["error"]
        else:
            assert "gave up after 2 attempts" in row["error"], row["error"]
            assert "HTTP 500: overloaded overloaded" in row["error"], row["error"]
    attempts = {}
    for _, sha, _ in log:
        attempts[sha] = attempts.get(sha, 0) + 1
    assert sorted(attempts.values()) == [1 if kind != "error" else 2] * 4


def event(delta, finish=None, **extra):
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra}).encode() + b"\n\n"


def cut_answer(h, kind):
    """An answer that breaks off mid-way, each as a server or gateway does it."""
    if kind in ("stream-chunked", "stream-closed"):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        events = event({"content": "a cut"}) + event({"content": " capt"})
        if kind == "stream-chunked":  # a clean end of the transfer, no [DONE]
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events))
        else:  # the connection closed after the last event
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(events)
            h.close_connection = True
    elif kind == "body-closed":  # close-delimited, closed mid-JSON
        body = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "a cut caption"}}]}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body[:len(body) // 2])
        h.close_connection = True
    else:  # finish_reason "error" (OpenRouter's provider failed) or "abort" (vLLM)
        reply(h, 200, json.dumps({
            "choices": [{"index": 0, "finish_reason": kind, "message": {
                "role": "assistant", "content": "a cut capt"}}],
            **({"error": {"code": 502, "message": "Provider disconnected"}}
               if kind == "error" else {})}).encode())


@pytest.mark.parametrize("kind", ["stream-chunked", "stream-closed", "body-closed", "error",
                                  "abort"])
@pytest.mark.parametrize("recovers", [True, False])
def test_an_answer_cut_off_is_asked_again_never_kept(sluice, tmp_path, kind, recovers):
    # Half an answer used to be the row's caption (a stream's clean end
    # without finish_reason or [DONE]; finish_reason "error"/"abort" read
    # as "stop"), or failed the row at once (a body closed mid-JSON). Now
    # it is an attempt that failed: asked again, then the row fails
    # naming why.
    stream = kind.startswith("stream")

    def answer(h, n, body):
        if n == 0 or not recovers:
            return cut_answer(h, kind)
        if stream:
            return reply(h, 200, event({"content": "a whole caption"}) +
                         event({}, "stop") + b"data: [DONE]\n\n", content_type="text/event-stream")
        completion(h, "a whole caption")

    inp = few_inputs(tmp_path)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--max-attempts", "2",
                    "--metrics-addr", "off", *(["--stream"] if stream else []), timeout=120)
        log = list(fake.log)
    rows = ok_rows(out)
    assert len(rows) == 4
    assert sorted(n for _, _, n in log) == [0] * 4 + [1] * 4  # each row asked twice
    if recovers:
        assert r.returncode == 0, r.stderr
        assert all(row["caption"] == "a whole caption" and row["finish_reason"] == "stop"
                   for row in rows), rows
        return
    assert r.returncode == 3, r.stderr
    why = {"stream-chunked": "the stream ended without a finish_reason or data: [DONE], "
                             "after 2 content chunks (cut off)",
           "stream-closed": "the stream ended without a finish_reason or data: [DONE]",
           "body-closed": "the body ends inside its JSON",
           "error": 'finish_reason "error": Provider disconnected (cut off)',
           "abort": 'finish_reason "abort" (cut off)'}[kind]
    for row in rows:
        assert row["caption"] is None and row["id"] in row["error"], row
        assert "gave up after 2 attempts" in row["error"] and why in row["error"], row["error"]
        assert fake.url in row["error"] and "HTTP 200 but" in row["error"], row["error"]


def test_a_server_that_does_not_stream_is_read_with_stream(sluice, tmp_path):
    # With --stream, a server or gateway that does not stream answers the
    # whole completion as one application/json body: it was taken for a
    # stream cut before its first event, asked again --max-attempts times
    # (each a whole generation) and the row failed as "cut off". It is the
    # answer: kept, asked once. A stream labelled application/json is still
    # read as a stream.
    def answer(h, n, body):
        assert body["stream"] is True
        if int(h.sha, 16) % 2:
            return completion(h, "a whole caption")
        reply(h, 200, event({"content": "a streamed "}) + event({"content": "caption"}, "stop") +
              b"data: [DONE]\n\n", content_type="application/json")

    inp = few_inputs(tmp_path)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--stream", "--max-attempts", "3",
                    "--metrics-addr", "off", timeout=60)
        log = list(fake.log)
    assert r.returncode == 0, r.stderr
    rows = ok_rows(out)
    assert len(rows) == 4 and [n for _, _, n in log] == [0] * 4  # each asked once
    assert {row["caption"] for row in rows} == {"a whole caption", "a streamed caption"}
    assert all(row["finish_reason"] == "stop" for row in rows), rows


def test_finish_reasons_are_written_as_the_server_gave_them(sluice, tmp_path):
    # A finish_reason sluice does not know is kept as the server wrote it,
    # and none (null) is none: both were written "stop" before.
    def answer(h, n, body):
        text = body["messages"][-1]["content"][-1]["text"]
        reply(h, 200, json.dumps({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": "a caption"},
            "finish_reason": None if "null" in text else "eos_token"}]}).encode())

    inp = few_inputs(tmp_path, 1)
    for word, want in (("null", None), ("word", "eos_token")):
        with FakeServer(answer) as fake:
            r = caption(sluice, inp, tmp_path / word, "--endpoint", fake.url, "--prompt",
                        f"say {word}", "--metrics-addr", "off", timeout=60)
        assert r.returncode == 0, r.stderr
        rows = ok_rows(tmp_path / word)
        assert [(row["caption"], row["finish_reason"]) for row in rows] == [("a caption", want)]


@pytest.mark.parametrize("kind, why", [
    ("refusal", "the model refused: I can't help with that."),
    ("content_filter", "the server's content filter stopped the answer"),
    ("tool_call", "the server answered with a tool call, not text"),
    ("reasoning", "the answer was all reasoning (650 bytes of reasoning_content, no content): "
                  "it reached max_tokens while thinking; raise --max-tokens"),
])
def test_an_answer_that_is_no_caption_fails_its_row(sluice, tmp_path, kind, why):
    # Each was written as a caption '' with no error before.
    message = {"role": "assistant", "content": None}
    finish = {"refusal": "stop", "content_filter": "content_filter", "tool_call": "tool_calls",
              "reasoning": "length"}[kind]
    if kind == "refusal":
        message["refusal"] = "I can't help with that."
    elif kind == "tool_call":
        message["tool_calls"] = [{"id": "c", "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}}]
    elif kind == "reasoning":
        message["reasoning_content"] = "let me think " * 50

    def answer(h, n, body):
        reply(h, 200, json.dumps({"choices": [{"index": 0, "message": message,
                                               "finish_reason": finish}]}).encode())

    r, rows, log, url = against_fake(sluice, tmp_path, answer)
    assert r.returncode == 3, r.stderr
    assert len(rows) == 2 and len(log) == 2  # not asked again: the answer would be the same
    for row in rows:
        assert row["caption"] is None and row["error_stage"] == "engine", row
        assert row["id"] in row["error"] and url in row["error"], row["error"]
        assert why in row["error"], row["error"]


def test_a_content_of_parts_is_its_text_and_a_200_error_names_its_message(sluice, tmp_path):
    # Mistral's reasoning models answer content as an array of parts
    # ({"type": "thinking"}, {"type": "text"}): its rows failed with "the
    # answer has no choices[0].message.content". Its text parts are the
    # caption. A 200 whose body is an error object (a gateway whose
    # upstream failed) failed with the same words, hiding the server's:
    # now its message is named.
    def answer(h, n, body):
        if int(h.sha, 16) % 2:
            return reply(h, 200, json.dumps({"error": {"message": "upstream overloaded",
                                                       "code": 502}}).encode())
        reply(h, 200, json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "a cup "}, {"type": "text", "text": "of coffee"}]}}]
        }).encode())

    r, rows, _, _ = against_fake(sluice, tmp_path, answer, 4)
    assert r.returncode == 3, r.stderr
    good = [row for row in rows if row["error"] is None]
    bad = [row for row in rows if row["error"]]
    assert good and bad and len(rows) == 4
    assert all(row["caption"] == "a cup of coffee" for row in good), good
    assert all(row["error"].endswith("answered HTTP 200 but the answer is an error, not a "
                                     "completion: upstream overloaded") for row in bad), bad


def test_a_redirect_is_not_followed_and_names_where_it_points(sluice, tmp_path):
    # A gateway moved to https answers 308 with a Location: the row failed
    # with "HTTP 308: (empty body)", not saying where. The request (and its
    # key) is not sent on; the row fails at once naming the Location.
    def answer(h, n, body):
        reply(h, 308, b"", [("Location", "https://gw.example/v1/chat/completions?token=t0k")])

    r, rows, log, url = against_fake(sluice, tmp_path, answer)
    assert r.returncode == 3, r.stderr
    assert len(rows) == 2 and len(log) == 2  # not asked again, not followed
    for row in rows:
        assert row["error"] == (f"{row['id']}: {url} answered HTTP 308, a redirect to "
                                "https://gw.example/v1/chat/completions?token=*** (not followed: "
                                "give the endpoint's URL as it is now, --endpoint)"), row


def test_an_api_key_read_from_a_file_keeps_working(sluice, tmp_path):
    # A key with the newline of the file it came from (a Kubernetes secret)
    # put a bare newline in the Authorization header: every request was a
    # 400 with an empty body. Surrounding white space is dropped; a control
    # character inside the key is a wrong setting, refused naming the
    # variable, the key never printed.
    seen = []

    def answer(h, n, body):
        seen.append(h.headers.get("Authorization"))
        completion(h)

    inp = few_inputs(tmp_path, 2)
    with FakeServer(answer) as fake:
        def run(key, out):
            return subprocess.run(
                [str(sluice.binary), "caption", str(inp), "-o", str(tmp_path / out), "--engine",
                 "openai", "--endpoint", fake.url, "--api-key-env", "SLUICE_TEST_KEY",
                 "--metrics-addr", "off"], capture_output=True, text=True, timeout=60,
                env={**__import__("os").environ, "SLUICE_TEST_KEY": key})

        r = run("  sk-abc123\r\n", "ok")
        assert r.returncode == 0, r.stderr
        assert seen == ["Bearer sk-abc123"] * 2
        assert all(row["caption"] for row in ok_rows(tmp_path / "ok"))
        for key in ("sk-abc\n123", "sk-abc\t123"):
            r = run(key, "bad")
            assert r.returncode == 2, r.stderr
            assert "--api-key-env SLUICE_TEST_KEY: the key holds a control character" in r.stderr
            assert "sk-abc" not in r.stderr + r.stdout
        r = run(" \n", "empty")
        assert r.returncode == 2 and "not set or empty" in r.stderr, r.stderr
    assert len(seen) == 2


def test_a_server_quoting_the_api_key_in_its_errors_does_not_leak_it(sluice, tmp_path):
    # A gateway that quotes the request's Authorization header in its error
    # ("invalid key: Bearer sk-...") put the key into the failed rows'
    # error, stderr, _report.html and the stopping message: each is written
    # with the key as ***, the rest of the server's words kept.
    key = "sk-leak-9f3a7c"

    def answer(h, n, body):
        said = "invalid key: " + h.headers.get("Authorization", "")
        if body.get("stream"):  # an error event inside a stream
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            h.wfile.write(b"data: " + json.dumps({"error": {"message": said}}).encode() +
                          b"\n\n")
            return
        reply(h, 400 if int(h.sha, 16) % 2 else 500, json.dumps({"error": {"message": said}}).encode())

    def run(fake, out, *extra):
        return subprocess.run(
            [str(sluice.binary), "caption", str(inp), "-o", str(tmp_path / out), "--engine",
             "openai", "--endpoint", fake.url, "--api-key-env", "SLUICE_TEST_KEY",
             "--max-attempts", "2", "--endpoint-cooldown", "0.2", "--metrics-addr", "off",
             *extra], capture_output=True,
            text=True, timeout=60, env={**os.environ, "SLUICE_TEST_KEY": key})

    def written(out):
        return "".join(f.read_text(errors="replace") for f in (tmp_path / out).rglob("*")
                       if f.is_file() and f.suffix != ".sqlite")

    inp = few_inputs(tmp_path, 4)
    with FakeServer(answer) as fake:
        for out, extra in (("plain", ()), ("stream", ("--stream",))):
            r = run(fake, out, *extra)
            assert r.returncode == 3, r.stderr
            rows = ok_rows(tmp_path / out)
            assert len(rows) == 4 and all(
                "invalid key: Bearer ***" in row["error"] for row in rows), rows
            assert key not in r.stderr + r.stdout + written(out), out
            assert "invalid key: Bearer ***" in r.stderr

    # The check at start: a 401 quoting the key stops with status 2.
    class Refusing(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            reply(self, 401, json.dumps({"error": {
                "message": "no such key " + self.headers.get("Authorization", "")}}).encode())

    with LocalServer(Refusing) as refusing:
        r = run(refusing, "start")
    assert r.returncode == 2, r.stderr
    assert "refused the API key (HTTP 401: no such key Bearer ***)" in r.stderr, r.stderr
    assert key not in r.stderr + r.stdout


def test_an_endpoints_password_reaches_the_server_not_the_output(sluice, tmp_path):
    # --endpoint http://user:PASSWORD@host (basic auth of a proxy in front
    # of the server): the password was in every message naming the
    # endpoint and in _metrics.prom's endpoint label.
    seen = []

    def answer(h, n, body):
        seen.append(h.headers.get("Authorization"))
        if n == 0:
            return reply(h, 500, b'{"error": {"message": "warming up"}}')
        completion(h)

    inp = few_inputs(tmp_path, 2)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        host = fake.url.removeprefix("http://")
        r = caption(sluice, inp, out, "--endpoint", f"http://proxyuser:pw-s3cret@{host}",
                    "--endpoint-failures", "1", "--endpoint-cooldown", "0.2", "--metrics-addr",
                    "off", timeout=60)
    assert r.returncode == 0, r.stderr
    basic = "Basic " + base64.b64encode(b"proxyuser:pw-s3cret").decode()
    assert seen == [basic] * 4
    assert f"endpoint http://proxyuser:***@{host} out of rotation" in r.stderr, r.stderr
    assert f'endpoint="http://proxyuser:***@{host}"' in (out / "_metrics.prom").read_text()
    written = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file())
    assert "pw-s3cret" not in r.stderr + r.stdout and b"pw-s3cret" not in written


def test_sampling_left_at_its_default_is_not_sent(sluice, tmp_path):
    # min_p 0.0 (and top_p 1.0) went into every request, which OpenAI's
    # API and strict gateways refuse; a temperature of 0.7 went out as
    # 0.699999988 (a float widened to double).
    bodies = []

    def answer(h, n, body):
        bodies.append(body)
        completion(h)

    inp = few_inputs(tmp_path, 1)
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, tmp_path / "plain", "--endpoint", fake.url, "--metrics-addr",
                    "off", timeout=60)
        assert r.returncode == 0, r.stderr
        r = caption(sluice, inp, tmp_path / "set", "--endpoint", fake.url, "--metrics-addr",
                    "off", "--temperature", "0.7", "--top-p", "0.9", "--min-p", "0.05",
                    "--top-k", "40", "--repeat-penalty", "1.1", "--presence-penalty", "0.5",
                    "--frequency-penalty", "-0.3", timeout=60)
        assert r.returncode == 0, r.stderr
    plain, chosen = bodies
    assert plain["temperature"] == 0.0
    for key in ("top_p", "min_p", "top_k", "repeat_penalty", "repetition_penalty",
                "presence_penalty", "frequency_penalty"):
        assert key not in plain, plain
    assert (chosen["temperature"], chosen["top_p"], chosen["min_p"], chosen["top_k"],
            chosen["repeat_penalty"], chosen["repetition_penalty"]) == (0.7, 0.9, 0.05, 40, 1.1,
                                                                        1.1)
    # OpenAI's own penalties (vLLM's too), sent when on
    assert (chosen["presence_penalty"], chosen["frequency_penalty"]) == (0.5, -0.3), chosen


def test_the_endpoint_check_at_start(sluice, tmp_path):
    # GET /v1/models: a 503 (llama-server loading its model) counted as up
    # and the run began against it; a 404 (a base URL that is the chat
    # completions URL) too, the model silently "default"; a --served-model
    # the listing does not hold was not noticed.
    inp = few_inputs(tmp_path, 1)
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        base = fake.url
        t0 = time.monotonic()
        models = {"get": 0, "ready_at": t0 + 2.5}
        handler = fake.server.RequestHandlerClass
        plain_get = handler.do_GET

        def loading(h):
            models["get"] += 1
            if time.monotonic() < models["ready_at"]:
                return reply(h, 503, b'{"error":{"code":503,"message":"Loading model"}}')
            plain_get(h)

        handler.do_GET = loading
        r = caption(sluice, inp, tmp_path / "loading", "--endpoint", base, "--metrics-addr",
                    "off", timeout=60)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 >= 2.5 and models["get"] >= 3
        assert "waiting for an endpoint to be ready" in r.stderr and "Loading model" in r.stderr
        assert [row["caption"] for row in ok_rows(tmp_path / "loading")] == ["a fake caption"]

        models["ready_at"] = float("inf")  # loading forever: --give-up-after ends the wait
        r = caption(sluice, inp, tmp_path / "never", "--endpoint", base, "--give-up-after", "2",
                    "--metrics-addr", "off", timeout=60)
        assert r.returncode != 0 and "no endpoint was ready after 2 s" in r.stderr, r.stderr

        handler.do_GET = lambda h: reply(h, 404, b'{"detail":"Not Found"}')
        r = caption(sluice, inp, tmp_path / "404", "--endpoint", base + "/v1/chat/completions",
                    "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2, r.stderr
        assert "answered HTTP 404 for" in r.stderr and "give each server's base URL" in r.stderr

        handler.do_GET = plain_get
        r = caption(sluice, inp, tmp_path / "model", "--endpoint", base, "--served-model",
                    "gpt-5", "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2, r.stderr
        assert "--served-model 'gpt-5'" in r.stderr and "lists 'fake'" in r.stderr, r.stderr


def loading_model(handler):
    reply(handler, 503, b'{"error":{"code":503,"message":"Loading model"}}')


def hung_listing(handler):
    time.sleep(30)  # past the test's patience; the probe gives up at 20 s


@pytest.mark.parametrize("server", [loading_model, hung_listing], ids=["503", "hung"])
def test_a_stop_ends_the_wait_for_a_loading_server(sluice, tmp_path, server):
    # Ctrl-C while every endpoint answered GET /v1/models with 503 (a
    # server loading its model): nothing was in flight, yet the run went on
    # waiting, its live page up, until --give-up-after (two minutes by
    # default) and then failed as if no server had come up; while the
    # probe waited on a server that does not answer, 20 s.
    inp = few_inputs(tmp_path, 1)
    asked = []
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        fake.server.RequestHandlerClass.do_GET = lambda h: (asked.append(1), server(h))
        err_path = tmp_path / "stderr"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                [str(sluice.binary), "caption", str(inp), "-o", str(tmp_path / "out"),
                 "--engine", "openai", "--endpoint", fake.url, "--metrics-addr", "127.0.0.1:0"],
                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            waiting = "waiting for an endpoint to be ready" if server is loading_model else ""
            while not asked or waiting not in err_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
            m = re.search(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", err_path.read_text())
            assert m, err_path.read_text()
            status = json.loads(urllib.request.urlopen(m.group(1) + "/api/status",
                                                       timeout=10).read())
            assert status["finished"] is False
            rc, took = sigint_timed(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = err_path.read_text()
    assert rc == 130, log
    assert took < 5, f"{took:.1f} s from the stop request to the exit: {log}"
    assert "stopped on request while waiting for an endpoint to be ready" in log, log
    assert "no endpoint was ready" not in log and "no endpoint answers" not in log, log
    if server is loading_model:
        assert "Loading model" in log, log


def key_refused(handler):
    reply(handler, 401, json.dumps({"error": {"message": "Incorrect API key provided",
                                              "type": "invalid_request_error"}}).encode())


def test_a_key_refused_mid_run_stops_the_job_at_once(sluice, tmp_path):
    # The check at start passed (GET /v1/models is open, as on some
    # gateways, or the key was revoked later), then every completion is a
    # 401: each remaining row was sent and failed with the same refusal,
    # thousands of requests for a job that could not go on.
    served = []

    def answer(h, n, body):
        if len(served) < 3:
            served.append(body)
            return completion(h)
        key_refused(h)

    inp = many_inputs(tmp_path, 2)
    n_inputs = 2 * len(sample_images())
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--max-in-flight", "1",
                    "--metrics-addr", "off", timeout=60)
        posts = len(fake.log)
    assert r.returncode == 1, r.stderr
    assert "every endpoint refused the API key" in r.stderr, r.stderr
    assert "HTTP 401: Incorrect API key provided" in r.stderr and "--api-key-env" in r.stderr
    assert posts == 4, "one request refused, then no other sent"
    rows = ok_rows(out)
    assert sum(1 for row in rows if row["caption"]) == 3
    assert all("refused the API key" in row["error"] or "HTTP 401" in row["error"]
               for row in rows if not row["caption"])
    # Once the key is right, the same command goes on from there.
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--retry-failed",
                    "--metrics-addr", "off", timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]
    assert len(rows) == len({row["id"] for row in rows}) == n_inputs
    assert all(row["caption"] for row in rows)


def test_a_key_refused_on_the_last_row_stops_the_job_as_well(sluice, tmp_path):
    # The refusal that left no endpoint failed its row as an answer: when
    # that row was the run's last, nothing else noticed the stop and the
    # run ended as one with failed rows (exit 3), not exit 1.
    out = tmp_path / "out"
    with FakeServer(lambda h, n, body: key_refused(h)) as fake:
        r = caption(sluice, few_inputs(tmp_path, 1), out, "--endpoint", fake.url,
                    "--metrics-addr", "off", timeout=60)
        posts = len(fake.log)
    assert r.returncode == 1, r.stderr
    assert "every endpoint refused the API key" in r.stderr, r.stderr
    assert posts == 1
    [row] = ok_rows(out)
    assert "refused the API key" in row["error"] and "HTTP 401" in row["error"], row


def test_an_endpoint_refusing_the_key_leaves_rotation_its_rows_go_to_the_others(sluice,
                                                                               tmp_path):
    inp = few_inputs(tmp_path, 4)
    out = tmp_path / "out"
    with FakeServer(lambda h, n, body: key_refused(h)) as refusing, \
            FakeServer(lambda h, n, body: completion(h)) as good:
        r = caption(sluice, inp, out, "--endpoint", refusing.url, "--endpoint", good.url,
                    "--max-in-flight", "1", "--metrics-addr", "off", timeout=60)
        refused, answered = len(refusing.log), len(good.log)
    assert r.returncode == 0, r.stderr
    assert f"endpoint {refusing.url} refused the API key" in r.stderr, r.stderr
    assert refused == 1 and answered == 4
    rows = ok_rows(out)
    assert len(rows) == 4 and all(row["caption"] for row in rows)


def test_a_rate_limit_slows_the_pace_and_loses_no_row(sluice, tmp_path):
    # A server that takes two requests at a time and answers 429 to any
    # more: each refusal counted against --max-attempts, so rows were lost
    # to a limit a slower pace meets, and the pace never slowed.
    import threading
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "refused": 0}

    def answer(h, n, body):
        with lock:
            busy = state["now"] >= 2
            if busy:
                state["refused"] += 1
            else:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
        if busy:
            return too_many_requests(h)
        try:
            completion(h, delay_s=0.1)
        finally:
            with lock:
                state["now"] -= 1

    inp = many_inputs(tmp_path, 1)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--max-in-flight", "8",
                    "--max-attempts", "2", "--metrics-addr", "off", timeout=120)
        posts = len(fake.log)
    assert r.returncode == 0, r.stderr
    rows = ok_rows(out)
    assert len(rows) == len(sample_images()) and all(row["caption"] for row in rows), r.stderr
    assert state["most"] == 2
    # Eight sent at once, six refused; the limit then halves to 4 and 2
    # and climbs back one at a time: far fewer refusals than rows.
    assert state["refused"] < len(rows), (state, posts)


def test_an_endpoints_file_takes_comments_after_a_url_and_no_endpoint_twice(sluice, tmp_path):
    # "http://gpu1:8000  # rack 3" was taken whole as the URL (its requests
    # went to "8000  # rack 3"), and a server named twice got twice its
    # share, its failures counted as two endpoints'.
    inp = few_inputs(tmp_path, 2)
    with FakeServer(lambda h, n, body: completion(h)) as a, \
            FakeServer(lambda h, n, body: completion(h)) as b:
        fleet = tmp_path / "fleet.txt"
        fleet.write_text(f"# the fleet\n{a.url}  # rack 3\n\n   {b.url}/v1\t# rack 4\r\n")
        r = caption(sluice, inp, tmp_path / "out", "--endpoints-file", fleet,
                    "--max-in-flight", "1", "--metrics-addr", "off", timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(a.log) + len(b.log) == 2 and len(a.log) and len(b.log)
        assert "rack" not in r.stderr
        two = tmp_path / "two.txt"
        two.write_text(f"{a.url} {b.url}\n")
        r = caption(sluice, inp, tmp_path / "two", "--endpoints-file", two,
                    "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2
        assert f"'{two}', line 1: '{a.url} {b.url}' is not one URL" in r.stderr, r.stderr
        r = caption(sluice, inp, tmp_path / "twice", "--endpoint", a.url, "--endpoint", b.url,
                    "--endpoint", a.url + "/v1/", "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2
        assert (f"endpoint {a.url} is given twice ('{a.url}' and '{a.url}/v1/'): name each "
                "server once") in r.stderr, r.stderr
        assert len(a.log) + len(b.log) == 2, "nothing sent"


def test_a_fleet_serving_different_models_is_refused_at_start(sluice, tmp_path):
    # Without --served-model the first listing's first id is the model; an
    # endpoint that does not serve it was refused with a message about a
    # --served-model that was never given.
    inp = few_inputs(tmp_path, 1)
    with FakeServer(lambda h, n, body: completion(h), models=("qwen-3b", "qwen-7b")) as a, \
            FakeServer(lambda h, n, body: completion(h), models=("llava-7b",)) as b:
        r = caption(sluice, inp, tmp_path / "out", "--endpoint", a.url, "--endpoint", b.url,
                    "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2
        assert (f"endpoint {b.url} does not serve 'qwen-3b', the model endpoint {a.url} lists "
                "first (GET /v1/models lists 'llava-7b' there)") in r.stderr, r.stderr
        assert "--served-model" in r.stderr and "--served-model 'qwen-3b'" not in r.stderr
        r = caption(sluice, inp, tmp_path / "named", "--endpoint", a.url, "--endpoint", b.url,
                    "--served-model", "qwen-7b", "--metrics-addr", "off", timeout=60)
        assert r.returncode == 2
        assert (f"--served-model 'qwen-7b': endpoint {b.url} does not serve it") in r.stderr
        assert not a.log and not b.log


def test_a_private_ca_is_trusted_through_ssl_cert_file(sluice, tmp_path):
    # An internal gateway behind a private CA: SSL_CERT_FILE (what curl,
    # OpenSSL and Python's requests read) was ignored, so there was no way
    # to reach it but none.
    import os
    import ssl
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    inp = few_inputs(tmp_path, 2)
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        fake.server.socket = ctx.wrap_socket(fake.server.socket, server_side=True)
        url = fake.url.replace("http://", "https://")
        env = {k: v for k, v in os.environ.items()
               if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE")}

        def run(out, **extra):
            return subprocess.run(
                [str(sluice.binary), "caption", str(inp), "-o", str(tmp_path / out), "--engine",
                 "openai", "--endpoint", url, "--metrics-addr", "off"],
                capture_output=True, text=True, timeout=60, env={**env, **extra})

        r = run("untrusted")
        assert r.returncode == 2 and "certificate" in r.stderr, r.stderr
        for var in ("SSL_CERT_FILE", "CURL_CA_BUNDLE"):
            r = run(var, **{var: str(cert)})
            assert r.returncode == 0, r.stderr
            assert all(row["caption"] for row in ok_rows(tmp_path / var))
        assert len(fake.log) == 4


def test_headers_a_named_key_header_and_a_query_in_the_endpoint(sluice, tmp_path):
    # Azure OpenAI takes its key as "api-key: KEY" and its version as a
    # query ("?api-version=..."); OpenRouter wants HTTP-Referer and X-Title.
    # The key went only as "Authorization: Bearer", no header could be
    # added, and a query in --endpoint was cut into the path.
    import os
    seen = []

    def answer(h, n, body):
        seen.append((h.path, h.headers.get("api-key"), h.headers.get("Authorization"),
                     h.headers.get("X-Title"), h.headers.get("HTTP-Referer")))
        completion(h)

    inp = few_inputs(tmp_path, 2)
    with FakeServer(answer) as fake:
        r = subprocess.run(
            [str(sluice.binary), "caption", str(inp), "-o", str(tmp_path / "out"), "--engine",
             "openai", "--endpoint", fake.url + "/openai/v1?api-version=2024-10-21",
             "--api-key-env", "SLUICE_TEST_KEY", "--api-key-header", "api-key",
             "--header", "X-Title: sluice, the test", "--header", "HTTP-Referer:https://x.org",
             "--metrics-addr", "off"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "SLUICE_TEST_KEY": "azure-key-1"})
        assert r.returncode == 0, r.stderr
        assert seen == [("/openai/v1/chat/completions?api-version=2024-10-21", "azure-key-1",
                         None, "sluice, the test", "https://x.org")] * 2
        for bad, why in ((["--header", "X-Title sluice"], "expected 'NAME: VALUE'"),
                         (["--header", "X Title: a"], "expected 'NAME: VALUE'"),
                         (["--header", "X-Title: a\nb"], "holds a control character"),
                         (["--api-key-header", "api-key:"], "not a header name")):
            r = caption(sluice, inp, tmp_path / "bad", "--endpoint", fake.url, *bad,
                        "--metrics-addr", "off", timeout=60)
            assert r.returncode == 2 and why in r.stderr, (bad, r.stderr)
    assert len(seen) == 2


def test_a_resumed_run_refuses_a_fleet_now_serving_another_model(sluice, tmp_path):
    # Without --served-model the model is the first the fleet lists; a
    # resumed run did not check it, so a folder's rows came from two
    # models when the servers had been switched between the runs.
    inp = few_inputs(tmp_path, 2)
    out = tmp_path / "out"
    with FakeServer(lambda h, n, body: completion(h), models=("qwen-3b",)) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    timeout=60)
        assert r.returncode == 0, r.stderr
        (inp / "more.jpg").symlink_to(sample_images()[2])  # work left for a resumed run
        fake.models = ("qwen-7b", "qwen-3b")
        sent = len(fake.log)
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    timeout=60)
        assert r.returncode == 2, r.stderr
        assert (f"output folder '{out}' holds rows answered by model 'qwen-3b', and the "
                "endpoints now serve (the first of GET /v1/models) 'qwen-7b'") in r.stderr
        assert "pass --served-model 'qwen-3b'" in r.stderr and "another -o" in r.stderr
        assert len(fake.log) == sent  # no row was asked of the other model
        # Naming another model is refused the same way.
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    "--served-model", "qwen-7b", timeout=60)
        assert r.returncode == 2 and "this run names (--served-model) 'qwen-7b'" in r.stderr
        # Naming the first run's model goes on: --served-model X and a fleet
        # found to serve X are the same job.
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    "--served-model", "qwen-3b", timeout=60)
        assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ["astronaut.jpg", "camera.jpg", "more.jpg"]
    assert {row["model"] for row in rows} == {"qwen-3b"}


def test_a_folder_of_a_sluice_that_kept_the_model_in_its_fingerprint_resumes(sluice, tmp_path):
    # Before the model served was recorded beside the fingerprint, the
    # fingerprint held --served-model (null when found from the fleet): such
    # a folder is compared as it was, not refused for a key gone missing.
    import sqlite3
    inp = few_inputs(tmp_path, 2)
    out = tmp_path / "out"
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    timeout=60)
        assert r.returncode == 0, r.stderr
        db = sqlite3.connect(out / "_sluice_ledger.sqlite")
        (fp,), = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'")
        assert "\nresponse_format\t" in fp and "served_model" not in fp
        # (nor fingerprint_form, which came later)
        assert fp.endswith("\nfingerprint_form\t1\n"), fp
        fp = fp[:-len("fingerprint_form\t1\n")]
        db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'",
                   (fp.replace("\nresponse_format\t", "\nserved_model\tnull\nresponse_format\t"),))
        db.execute("DELETE FROM meta WHERE key = 'served_model'")
        db.commit()
        db.close()
        (inp / "more.jpg").symlink_to(sample_images()[2])
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    timeout=60)
        assert r.returncode == 0, r.stderr
        assert "resuming: 2 inputs were already done" in r.stderr


def test_top_p_0_is_sent_as_greedy_and_max_tokens_goes_in_the_field_asked(sluice, tmp_path):
    # --top-p 0 went out as "top_p": 0, which vLLM refuses (it takes (0, 1]);
    # in the embedded engine it keeps the most likely token alone (llama.cpp's
    # top-p keeps one at least): greedy, whatever the temperature. And
    # max_tokens was the only field for the cap, which OpenAI deprecates for
    # max_completion_tokens (its reasoning models refuse max_tokens); vLLM and
    # llama-server read max_completion_tokens first, max_tokens otherwise.
    bodies = {}

    def answer(h, n, body):
        bodies[body["messages"][-1]["content"][-1]["text"]] = body
        completion(h)

    inp = few_inputs(tmp_path, 1)
    runs = {"top_p_0": ("--top-p", "0", "--temperature", "0.8", "--top-k", "40"),
            "field_new": ("--max-tokens-field", "max_completion_tokens", "--top-p", "0.5"),
            "field_both": ("--max-tokens-field", "both")}
    with FakeServer(answer) as fake:
        for name, extra in runs.items():
            r = caption(sluice, inp, tmp_path / name, "--endpoint", fake.url, "--metrics-addr",
                        "off", "--max-tokens", "20", "--prompt", name, *extra, timeout=60)
            assert r.returncode == 0, r.stderr
    greedy, new, both = (bodies[name] for name in runs)
    assert greedy["temperature"] == 0.0 and "top_p" not in greedy, greedy
    assert greedy["top_k"] == 40 and greedy["max_tokens"] == 20
    assert "max_completion_tokens" not in greedy  # the default field is unchanged
    assert new["max_completion_tokens"] == 20 and "max_tokens" not in new, new
    assert new["top_p"] == 0.5 and new["temperature"] == 0.0
    assert both["max_completion_tokens"] == both["max_tokens"] == 20, both


def test_the_summary_names_the_output_folder_and_its_part_files(sluice, tmp_path):
    # The summary's output line named only the last part file ("(the last
    # of the shards)"), so a run of 40 parts looked like a run of one.
    inp = few_inputs(tmp_path, 3)
    out = tmp_path / "out"

    def run(*extra):
        r = caption(sluice, inp, out, "--endpoint", fake.url, "--metrics-addr", "off",
                    "--shard-rows", "1", *extra, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = [line for line in r.stdout.splitlines() if line.startswith("output: ")]
        assert len(lines) == 1, r.stdout
        return lines[0]

    with FakeServer(lambda h, n, body: completion(h)) as fake:
        assert run() == f"output: {out} (3 part files: part-00000.jsonl to part-00002.jsonl)"
        (inp / "more.jpg").symlink_to(sample_images()[3])
        assert run() == f"output: {out} (1 part file: part-00003.jsonl)"  # this run's
        (inp / "more2.jpg").symlink_to(sample_images()[4])
        (inp / "more3.jpg").symlink_to(sample_images()[5])
        assert run() == f"output: {out} (2 part files: part-00004.jsonl, part-00005.jsonl)"


def test_a_sigint_between_the_loops_pass_and_a_send_stops_that_send(sluice, tmp_path):
    # The engine's loop read the stop flag once a pass: a stop that came
    # after that read still let the pass send what the in-flight limit had
    # room for. SLUICE_TEST_FAULTS holds the first send after an answer
    # (the 5th) for 3 s, between the pass's start and the send; the signal
    # lands there. That request must not go out: 4 POSTs, not 5.
    import signal
    import threading
    lock = threading.Lock()
    state = {"posts": 0}

    def answer(h, n, body):
        with lock:
            k = state["posts"]
            state["posts"] += 1
        completion(h, delay_s=0.0 if k == 0 else 2.0)

    inp = many_inputs(tmp_path, 2)
    out = tmp_path / "out"
    with FakeServer(answer) as fake:
        cmd = [str(sluice.binary), "caption", str(inp), "-o", str(out), "--engine", "openai",
               "--endpoint", fake.url, "--max-in-flight", "4", "--metrics-addr", "off"]
        env = dict(os.environ, SLUICE_TEST_FAULTS="openai.send=sleep:3000@5")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        lines, held = [], threading.Event()

        def read_stderr():
            for line in proc.stderr:
                lines.append(line)
                if "test fault point openai.send (" in line and "sleeping 3000 ms" in line:
                    held.set()

        reader = threading.Thread(target=read_stderr)
        reader.start()
        try:
            assert held.wait(120), "".join(lines[-20:])
            with lock:
                at_signal = state["posts"]
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
    err = "".join(lines)
    # the 4 sent before the hold (the server may not have counted the last
    # yet at the signal: at_signal 3 or 4), answered; never the 5th
    assert proc.returncode == 130, (at_signal, err[-3000:])
    assert state["posts"] == 4, f"{state['posts']} POSTs ({at_signal} at the signal): {err[-3000:]}"
    m = re.search(r"sluice: stopping: (\d+) queued rows not sent; resume redoes them", err)
    assert m and int(m.group(1)) >= 1, err[-3000:]
    assert len(ok_rows(out)) == 4, err[-3000:]


def test_the_first_sigint_sends_no_queued_row_and_the_resume_does_them(sluice, tmp_path):
    # The first Ctrl-C lets the requests on the wire finish; the rows queued
    # inside the engine (twice --max-in-flight) and behind it were still
    # POSTed one after another for the whole drain. Now they are not sent:
    # not written, not in the ledger, and the same command again does them,
    # each input once.
    import signal
    import threading
    lock = threading.Lock()
    state = {"posts": 0, "answered": 0, "fast": False}

    def answer(h, n, body):
        with lock:
            k = state["posts"]
            state["posts"] += 1
        # The first at once (so a row is done and the engine sends the
        # next), the rest slowly: no answer comes back while the stop is
        # on its way, so whatever is POSTed after the signal was queued.
        completion(h, delay_s=0.0 if k == 0 or state["fast"] else 2.0)
        with lock:
            state["answered"] += 1

    inp = many_inputs(tmp_path, 4)
    total = 4 * len(sample_images())
    out = tmp_path / "out"
    limit = 4
    with FakeServer(answer) as fake:
        cmd = [str(sluice.binary), "caption", str(inp), "-o", str(out), "--engine", "openai",
               "--endpoint", fake.url, "--max-in-flight", str(limit), "--metrics-addr", "off"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                with lock:
                    if state["answered"] >= 1 and state["posts"] >= limit + 1:
                        break
                time.sleep(0.01)
            with lock:
                sent_at_signal = state["posts"]
                in_flight = state["posts"] - state["answered"]
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        after = state["posts"] - sent_at_signal
        assert in_flight == limit, (state, err)
        assert proc.returncode == 130, err
        assert after <= in_flight, f"{after} POSTs after the signal ({in_flight} in flight): {err}"
        rows = ok_rows(out)
        assert all(row["error"] is None for row in rows), err  # none failed by the stop
        assert len(rows) == state["answered"] == sent_at_signal + after, (len(rows), state)
        m = re.search(r"sluice: stopping: (\d+) queued rows not sent; resume redoes them", err)
        assert m and 0 < int(m.group(1)) <= total - len(rows), err
        summary = json.loads((out / "_summary.json").read_text())
        assert summary["rows"]["deferred"] == int(m.group(1)), summary["rows"]
        left = total - len(rows)  # deferred, and never read

        # The same command again: the rows left, each sent and written once.
        state["posts"], state["fast"] = 0, True
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert state["posts"] == left, state
    ids = [json.loads(line)["id"] for part in sorted(out.glob("part-*.jsonl"))
           for line in part.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == total, (len(ids), len(set(ids)))


def test_a_model_listing_past_what_is_read(sluice, tmp_path):
    # A router listing thousands of models in over 8 MiB: the cut body read as
    # "answered HTTP 200 but no model listing ... give each server's base
    # URL", a wrong diagnosis. Now: without --served-model a message that asks
    # for it; with it, the run goes on (the listing cannot show it missing).
    inp = few_inputs(tmp_path, 2)
    many = tuple(f"router/model-{i:06d}-" + "x" * 60 for i in range(120_000))  # ~11 MB listed
    with FakeServer(lambda h, n, body: completion(h), models=many) as fake:
        r = caption(sluice, inp, tmp_path / "first", "--endpoint", fake.url,
                    "--metrics-addr", "off", timeout=120)
        assert r.returncode == 2, r.stderr
        assert (f"endpoint {fake.url} lists its models in over 8 MiB" in r.stderr
                and "name the model with --served-model" in r.stderr), r.stderr
        assert "base URL" not in r.stderr and not fake.log
        r = caption(sluice, inp, tmp_path / "named", "--endpoint", fake.url, "--served-model",
                    "router/model-000007-" + "x" * 60, "--metrics-addr", "off", timeout=120)
        assert r.returncode == 0, r.stderr
        assert "not checked that it serves" in r.stderr
        assert [row["caption"] for row in ok_rows(tmp_path / "named")] == ["a fake caption"] * 2
