"""Peers that misbehave: image URL servers, OpenAI-compatible servers and S3
stores answering what no sound one does. Each costs the row(s) concerned a
failure naming the input and the cause, and the run goes on. The engine is
a FakeServer (no model), so each run takes a second or so."""
import gzip
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from conftest import sample_images
from localserver import LocalServer, answering
from openai_helpers import FakeServer, completion, endless, reply


def caption(sluice, manifest, out, engine_url, *extra, timeout=120):
    return sluice.run("caption", manifest, "-o", out, "--engine", "openai", "--endpoint",
                      engine_url, "--metrics-addr", "off", *extra, timeout=timeout)


def rows_by_id(out):
    rows = [json.loads(line) for f in sorted(out.glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}), "a row was written twice"
    return {r["id"]: r for r in rows}


def manifest_of(path, urls):
    path.write_text("".join(json.dumps({"id": k, "image": u}) + "\n" for k, u in urls.items()))
    return path


def test_an_empty_or_unfollowed_answer_to_an_image_url_names_the_url(sluice, tmp_path):
    """A 200 with no body was taken for "not fetched" and the URL opened as a
    local file ('URL: cannot open: No such file or directory'); a 3xx with
    no Location was decoded as if its page were the image, and its answer
    to the ranged read that sniffs a name without an image extension was
    "HTTP 302 without a Content-Range giving the file's size"."""
    hits = {}

    def odd_image(path):
        """empty: 200 with no body; moved: a 302 with a page and no Location
        (nothing to follow); ok: an image; each with any extension."""
        hits[path] = hits.get(path, 0) + 1
        return {"/empty": (200, b""), "/moved": (302, b"<html>it moved somewhere</html>"),
                "/ok": (200, sample_images()[0].read_bytes())}[path.split(".")[0]]

    with LocalServer(answering(odd_image)) as images, \
            FakeServer(lambda h, n, body: completion(h)) as engine:
        urls = {k: f"{images.url}/{k}" for k in ("empty.jpg", "empty", "moved.jpg", "moved", "ok.jpg")}
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", urls), tmp_path / "o", engine.url)
    assert r.returncode == 3, r.stderr  # some rows failed, the run went on
    rows = rows_by_id(tmp_path / "o")
    assert rows["ok.jpg"]["error"] is None and rows["ok.jpg"]["caption"] == "a fake caption"
    assert rows["empty.jpg"]["error"] == \
        f"cannot download '{urls['empty.jpg']}': HTTP 200 with an empty body"
    assert rows["moved.jpg"]["error"] == f"cannot download '{urls['moved.jpg']}': HTTP 302"
    assert rows["moved"]["error"] == f"cannot read '{urls['moved']}' (bytes 0-511): HTTP 302"
    # a name without an image extension is sniffed by a ranged GET first
    assert rows["empty"]["error"] == f"cannot download '{urls['empty']}': HTTP 200 with an empty body"
    # none is retried
    assert hits == {"/empty.jpg": 1, "/empty": 2, "/moved.jpg": 1, "/moved": 1, "/ok.jpg": 1}


def test_a_redirect_loop_fails_its_row_without_a_retry(sluice, tmp_path):
    """An image URL that redirects to itself was retried as a passing
    fault: libcurl's "Maximum (5) redirects followed" 3 times over, 18
    GETs for one row. A loop is the same loop next time: the row fails at
    the first, naming the URL and the loop."""
    hits = {}

    def to_itself(path):
        hits[path] = hits.get(path, 0) + 1
        return 302, b"", [("Location", path)]

    with LocalServer(answering(to_itself)) as images, \
            FakeServer(lambda h, n, body: completion(h)) as engine:
        urls = {k: f"{images.url}/{k}" for k in ("loop.jpg", "loop")}
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", urls), tmp_path / "o", engine.url)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "o")
    why = "redirected more than 5 times (a redirect loop?)"
    assert rows["loop.jpg"]["error"] == f"cannot download '{urls['loop.jpg']}': {why}"
    # a name without an image extension is sniffed by a ranged GET first
    assert rows["loop"]["error"] == f"cannot read '{urls['loop']}' (bytes 0-511): {why}"
    assert hits == {"/loop.jpg": 6, "/loop": 6}  # one try: the GET and 5 redirects


def test_an_image_sent_gzip_compressed_is_decoded_within_the_download_bound(sluice, tmp_path):
    """An image URL answered with Content-Encoding: gzip failed its row as
    'not an image sluice can read (format not recognised)': its compressed
    bytes were decoded as the image. They are now inflated, as browsers
    do, and the download bound holds for what they inflate to."""

    def gzipped(path):
        """/photo.jpg: an image stored gzip-compressed, sent with
        Content-Encoding: gzip whatever the request asked (as S3 and GCS
        serve an object with that metadata); /bomb.jpg: 8 MiB of zeros so
        compressed (8 KB on the wire)."""
        data = sample_images()[0].read_bytes() if path == "/photo.jpg" else bytes(8 << 20)
        return 200, gzip.compress(data), [("Content-Encoding", "gzip")]

    with LocalServer(answering(gzipped)) as images, \
            FakeServer(lambda h, n, body: completion(h)) as engine:
        urls = {k: f"{images.url}/{k}.jpg" for k in ("photo", "bomb")}
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", urls), tmp_path / "o", engine.url,
                    "--max-download-bytes", "4M")
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "o")
    assert rows["photo"]["error"] is None and rows["photo"]["caption"] == "a fake caption"
    with Image.open(sample_images()[0]) as image:  # decoded: the image, not its gzip
        assert (rows["photo"]["source_width"], rows["photo"]["source_height"]) == image.size
    assert rows["bomb"]["error"] == (f"cannot download '{urls['bomb']}': larger than the "
                                     f"4194304-byte limit (--max-download-bytes)")


def test_the_cause_of_a_failure_survives_a_long_url(sluice, tmp_path):
    """Messages were cut at 1 KiB before their secrets were hidden: a
    presigned URL holding a session token (1.5 KB, as STS tokens make them)
    that answered 404 failed its row with the URL cut inside the token,
    and neither the rest of the URL nor 'HTTP 404' in the error."""
    token = "IQoJb3JpZ2luX2VjE" + "Ab9" * 400
    with LocalServer(answering(lambda path: (404, b""))) as images, \
            FakeServer(lambda h, n, body: completion(h)) as engine:
        url = (f"{images.url}/bucket/photos/img001.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
               f"&X-Amz-Credential=AKIAEXAMPLE%2F20261206%2Fus-east-1%2Fs3%2Faws4_request"
               f"&X-Amz-Security-Token={token}&X-Amz-Signature={'f' * 64}")
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", {"p": url}), tmp_path / "o",
                    engine.url)
    assert r.returncode == 3, r.stderr
    shown = url.split("X-Amz-Credential=")[0] + \
        "X-Amz-Credential=***&X-Amz-Security-Token=***&X-Amz-Signature=***"
    assert rows_by_id(tmp_path / "o")["p"]["error"] == f"cannot download '{shown}': HTTP 404"
    assert token not in r.stderr



class EndlessHeader:
    """A server whose every answer is a header line that never ends, but
    for GET /v1/models (an OpenAI endpoint's check at start)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()

    def serve(self, conn):
        with conn:
            try:
                if conn.recv(65536).startswith(b"GET /v1/models"):
                    models = json.dumps({"data": [{"id": "fake"}]}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
                                 b"%d\r\n\r\n%s" % (len(models), models))
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Junk: ")
                while not self.stop.is_set():
                    conn.sendall(b"a" * 65536)
            except OSError:
                pass

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def __enter__(self):
        threading.Thread(target=self.accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


def test_a_header_line_without_end_is_not_called_out_of_memory(sluice, tmp_path):
    """libcurl says "Out of memory" (and nothing more) of an answer whose
    header line passes 100 KB: an image URL or an endpoint sending one
    failed its row with that alone, which sends the user looking at the
    machine's memory, not at the server."""
    why = "Out of memory, or an answer header line past libcurl's 100 KB"
    with EndlessHeader() as bad, FakeServer(lambda h, n, body: completion(h)) as engine:
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", {"u": f"{bad.url}/a.jpg"}),
                    tmp_path / "o", engine.url, "--download-retries", "0")
        assert r.returncode == 3, r.stderr
        assert rows_by_id(tmp_path / "o")["u"]["error"] == \
            f"cannot download '{bad.url}/a.jpg': {why}"
        r = caption(sluice, manifest_of(tmp_path / "m2.jsonl", {"a": str(sample_images()[0])}),
                    tmp_path / "o2", bad.url, "--max-attempts", "1")
    assert r.returncode == 3, r.stderr
    assert rows_by_id(tmp_path / "o2")["a"]["error"] == \
        f"a: gave up after 1 attempt; the last, to {bad.url}: {why}"


@pytest.mark.parametrize("piece,last", [
    (b": keepalive\n\n", ": keepalive"),
    (b'data: {"choices":[{"delta":{}}]}\n\n', 'data: {"choices":[{"delta":{}}]}')])
def test_a_stream_that_never_brings_text_fails_its_row_at_its_bound(sluice, tmp_path, piece, last):
    """A server that answered a streamed request 200 and then sent
    keep-alive comments or empty deltas without end held each attempt to
    --request-timeout (600 s), 8 times over. A stream may bring
    --max-tokens + 10000 lines without text (each line of an event but the
    blank one ending an event with text): past them the row fails at once,
    naming what the server sent, and is not asked again."""
    with FakeServer(lambda h, n, body: endless(h, 200, b"", piece, "text/event-stream",
                                               fake.limit_s)) as fake:
        t0 = time.monotonic()
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", {"a": str(sample_images()[0])}),
                    tmp_path / "o", fake.url, "--stream", "--max-tokens", "8",
                    "--request-timeout", "8", "--max-attempts", "2")
        took = time.monotonic() - t0
        attempts = len(fake.log)
    assert r.returncode == 3, r.stderr
    assert rows_by_id(tmp_path / "o")["a"]["error"] == (
        f"a: {fake.url} answered HTTP 200 but its stream passed 10008 lines without text "
        f"(keep-alive comments, deltas without content, blank lines), the bound for max_tokens: "
        f"the server sends and does not answer (the last: '{last}', after 0 content chunks)")
    assert attempts == 1 and took < 8


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("figure", ["1000000000000000000000000", "1e400"])
def test_a_usage_figure_no_number_holds_is_dropped_and_the_answer_kept(sluice, tmp_path,
                                                                          figure, stream):
    """usage.prompt_tokens as an integer past int64 or a real past double
    is valid JSON that jansson holds in no value: the whole answer was
    "not JSON" (a stream's last chunk, text and all, was dropped: "the
    stream held no chat.completion.chunk") and the row failed. The figure
    now counts 0, as any that is no count; the text and the other figures
    are kept."""
    usage = f'"usage":{{"prompt_tokens":{figure},"completion_tokens":3}}'.encode()
    if stream:
        answer = (b'data: {"choices":[{"index":0,"delta":{"content":"a fake caption"},'
                  b'"finish_reason":"stop"}],' + usage + b'}\n\ndata: [DONE]\n\n')
    else:
        answer = (b'{"object":"chat.completion","choices":[{"index":0,"finish_reason":"stop",'
                  b'"message":{"role":"assistant","content":"a fake caption"}}],' + usage + b'}')
    kind = "text/event-stream" if stream else "application/json"
    with FakeServer(lambda h, n, body: reply(h, 200, answer, content_type=kind)) as fake:
        r = caption(sluice, manifest_of(tmp_path / "m.jsonl", {"a": str(sample_images()[0])}),
                    tmp_path / "o", fake.url, *(["--stream"] if stream else []))
    assert r.returncode == 0, r.stderr
    row = rows_by_id(tmp_path / "o")["a"]
    assert (row["error"], row["caption"]) == (None, "a fake caption")
    assert (row["prompt_tokens"], row["generated_tokens"]) == (0, 3)


# ---- S3 -------------------------------------------------------------------------------


class Store:
    """A bucket 'b' in memory, for what moto will not do: objects PUT,
    listed and read (GET with or without Range); `listing(token)` gives a
    ListObjectsV2 page's (keys, next token) or None (a 500), `uploads(marker)` a
    ListMultipartUploads page's (truncated, next key marker), and
    `complete` the answers to CompleteMultipartUpload in turn (the last
    again and again). `log` holds (method,
    path, query) per request, `ranged` the path of each GET with a Range."""

    def __init__(self):
        self.objects = {}
        self.log = []
        self.ranged = []  # the paths of GETs with a Range
        self.listing = None
        self.uploads = lambda marker: (False, None)
        self.shift = 0  # a ranged GET from a byte past this is answered from shift bytes before
        self.complete = [(200, b"<CompleteMultipartUploadResult><ETag>\"c\"</ETag>"
                               b"</CompleteMultipartUploadResult>")]
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def any(self):
                u = urlsplit(self.path)
                q = parse_qs(u.query, keep_blank_values=True)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                store.log.append((self.command, u.path, u.query))
                if self.headers.get("Range"):
                    store.ranged.append(u.path)
                self.send(*store.answer(self.command, u.path, q, body, self.headers))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY="s",
                        AWS_ENDPOINT_URL=self.url, AWS_REGION="us-east-1",
                        SLUICE_S3_TIMEOUT="5", AWS_MAX_ATTEMPTS="2")

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method, path, q, body, headers):
        key = path.removeprefix("/b/").removeprefix("/b")
        if method == "GET" and not key and "uploads" in q:
            more, marker = self.uploads(q.get("key-marker", [None])[0])
            next_ = f"<NextKeyMarker>{marker}</NextKeyMarker>" if marker else ""
            return 200, (f"<ListMultipartUploadsResult><IsTruncated>{str(more).lower()}"
                         f"</IsTruncated>{next_}</ListMultipartUploadsResult>").encode()
        if method == "GET" and not key:
            prefix = q.get("prefix", [""])[0]
            page = (self.listing(q.get("continuation-token", [None])[0]) if self.listing
                    else (sorted(k for k in self.objects if k.startswith(prefix)), None))
            if page is None:  # a page the store refuses
                return 500, b"<Error><Code>InternalError</Code><Message>We encountered an " \
                            b"internal error. Please try again.</Message></Error>"
            keys, token = page
            items = "".join(f"<Contents><Key>{quote(k)}</Key><Size>1</Size></Contents>"
                            for k in keys)
            more = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
            return 200, (f"<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>"
                         f"{'true' if token else 'false'}</IsTruncated>{more}{items}"
                         f"</ListBucketResult>").encode()
        if method == "POST" and "uploads" in q:
            return 200, b"<InitiateMultipartUploadResult><UploadId>u1</UploadId>" \
                        b"</InitiateMultipartUploadResult>"
        if method == "POST":
            return self.complete.pop(0) if len(self.complete) > 1 else self.complete[0]
        if method == "PUT":
            if headers.get("If-None-Match") == "*" and key in self.objects:
                return 412, b"<Error><Code>PreconditionFailed</Code></Error>"
            if "partNumber" not in q:
                self.objects[key] = body
            return 200, b"", [("ETag", '"e"')]
        if method == "DELETE":
            self.objects.pop(key, None)
            return 204, b""
        if key not in self.objects:
            return 404, b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
        data, rng = self.objects[key], headers.get("Range")
        if not rng:
            return 200, data, [("ETag", '"e"')]
        first, _, last = rng.removeprefix("bytes=").partition("-")
        first, last = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
        if self.shift and first >= self.shift:
            first, last = first - self.shift, last - self.shift
        if first >= len(data):
            return 416, b"", [("Content-Range", f"bytes */{len(data)}")]
        return 206, data[first:last + 1], [("ETag", '"e"'),
                                           ("Content-Range", f"bytes {first}-{last}/{len(data)}")]


def caption_s3(sluice, store, inputs, out, engine_url, *extra, timeout=60):
    return subprocess.run([str(sluice.binary), "caption", inputs, "-o", out, "--engine",
                           "openai", "--endpoint", engine_url, "--metrics-addr", "off", *extra],
                          env=store.env, capture_output=True, text=True, timeout=timeout)


def test_a_listing_that_goes_round_in_a_circle_fails_its_folder(sluice, tmp_path):
    """A store whose continuation tokens lead back to a page listed before
    (the same token again, or A -> B -> A, each page empty) was listed
    forever: thousands of requests a minute, no row, no end. The folder
    now fails naming the token."""
    image = sample_images()[0].read_bytes()
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.objects = {"in/a.jpg": image}
        for pages in ({None: (["in/a.jpg"], "same"), "same": ([], "same")},
                      {None: (["in/a.jpg"], "A"), "A": ([], "B"), "B": ([], "A")}):
            store.listing = lambda token: pages[token]
            store.log.clear()
            out = tmp_path / f"o{len(pages)}"
            r = caption_s3(sluice, store, "s3://b/in/", out, engine.url)
            assert r.returncode == 3, r.stderr
            rows = rows_by_id(out)
            again = "same" if len(pages) == 2 else "A"
            assert rows["in/"]["error"] == (
                f"listing s3://b/in/: the store gave continuation token '{again}' again after "
                f"{len(pages)} pages: its listing goes round in a circle and would never end")
            # each of the two listings (the count and the run) stops there
            assert sum(m == "GET" and p == "/b/" for m, p, q in store.log) == 2 * len(pages)


def test_a_listing_that_fails_midway_says_so_and_its_rerun_reads_the_rest(sluice, tmp_path):
    """A folder whose second listing page the store refuses past the
    retries: the rows given before are kept, the keys not given (the next
    pages', and the last key of the first page, which the walk holds back
    until it knows no key to come goes before it) have no row of their
    own. The folder's failed row said only the store's answer; it now says
    the listing stopped and the rest is unread, and the same command run
    again reads it: every key once, none lost. With --retry-failed, as the
    row says, the folder's failed row goes too and the run exits 0."""
    image = sample_images()[0].read_bytes()
    refuse = True
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.objects = {f"in/{k}.jpg": image for k in "abcdef"}
        store.listing = lambda token: ((["in/a.jpg", "in/b.jpg", "in/c.jpg"], "T") if not token
                                       else None if refuse
                                       else (["in/d.jpg", "in/e.jpg", "in/f.jpg"], None))
        r = caption_s3(sluice, store, "s3://b/in/", tmp_path / "o", engine.url)
        assert r.returncode == 3, r.stderr
        rows = rows_by_id(tmp_path / "o")
        assert sorted(k for k in rows if rows[k]["caption"]) == ["a.jpg", "b.jpg"]
        assert rows["in/"]["error"] == (
            f"the listing of s3://b/in/ stopped after 2 rows, the rest of the folder unread (run "
            f"the same command with --retry-failed to read it and take this row out): "
            f"GET s3://b/in/ ({store.url}): HTTP 500 "
            f"InternalError: We encountered an internal error. Please try again.")
        refuse = False
        r = caption_s3(sluice, store, "s3://b/in/", tmp_path / "o", engine.url)
    # 3: the output still holds the listing's failed row (--retry-failed
    # takes it out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "o")  # each row once
    assert sorted(k for k in rows if rows[k]["caption"]) == [f"{k}.jpg" for k in "abcdef"]
    # The rerun's 4 rows (c to f) are its total: the folder's failed row,
    # done before, is not one of the keys its count of 6 found, and the
    # count less the 3 done before said "4 of 3 (133%)".
    progress = [l for l in r.stderr.splitlines() if l.startswith("progress:")]
    assert progress and progress[-1].startswith("progress: 4 of 4 (100%)"), r.stderr
    assert rows["in/"]["error"], rows["in/"]
    # What the row says to do settles the output: the folder's row goes,
    # the six captions stay, each once, and the run exits 0.
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.objects = {f"in/{k}.jpg": image for k in "abcdef"}
        r = caption_s3(sluice, store, "s3://b/in/", tmp_path / "o", engine.url, "--retry-failed")
    assert r.returncode == 0, r.stderr
    rows = rows_by_id(tmp_path / "o")
    assert sorted(rows) == [f"{k}.jpg" for k in "abcdef"]
    assert all(row["caption"] and not row["error"] for row in rows.values())


def test_a_listing_of_uploads_that_goes_round_in_a_circle_is_left(sluice, tmp_path):
    """Before a run writes to a bucket it aborts the multipart uploads that
    killed runs left there, listing them page by page; a store that gave
    the same NextKeyMarker again held the run there forever. That listing
    is now left with a warning, and the run writes its rows."""
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jpg").symlink_to(sample_images()[0])
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.uploads = lambda marker: (True, "out/part-00000.jsonl")
        r = caption_s3(sluice, store, inp, "s3://b/out", engine.url, "--state-dir",
                       tmp_path / "state")
        assert r.returncode == 0, r.stderr
        assert "cannot abort the unfinished uploads of earlier runs: listing the uploads of " \
               "s3://b/out/: the store gave the markers of the page before " \
               "('out/part-00000.jsonl') again: its listing would never end" in r.stderr
        rows = [json.loads(line) for line in store.objects["out/part-00000.jsonl"].splitlines()]
        assert [(row["id"], row["caption"]) for row in rows] == [("a.jpg", "a fake caption")]
        assert sum("uploads" in q for m, p, q in store.log) == 2


def test_a_ranged_read_answered_with_other_bytes_fails_its_rows(sluice, tmp_path):
    """A store (a cache in front of one) answering a ranged GET with 206
    and other bytes than asked, saying so in its Content-Range (bytes
    0-452923 for bytes=1048576-1501499), had them read as the bytes
    asked for: a manifest in a bucket, read 1 MiB at a time, gave its first
    rows twice. The read now fails naming both ranges; the rows before it
    are kept."""
    image = sample_images()[0].read_bytes()
    lines = [json.dumps({"id": f"r{k:02d}", "image": "s3://b/a.jpg", "pad": "x" * 50000}) + "\n"
             for k in range(30)]
    manifest = "".join(lines).encode()
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.objects = {"a.jpg": image, "m.jsonl": manifest}
        store.shift = 1 << 20
        r = caption_s3(sluice, store, "s3://b/m.jsonl", tmp_path / "o", engine.url)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "o")
    whole = (1 << 20) // len(lines[0])  # the lines within the first MiB
    assert sorted(k for k in rows if rows[k]["caption"]) == [f"r{k:02d}" for k in range(whole)]
    [failed] = [row for row in rows.values() if row["error"]]
    end = len(manifest) - 1  # the second read asks for the rest
    assert failed["error"] == (
        f"manifest 's3://b/m.jsonl': reading stopped after line {whole}: GET s3://b/m.jsonl "
        f"({store.url}): the store sent bytes 0-{end - (1 << 20)} for the range {1 << 20}-{end}")


def test_an_image_with_a_long_key_is_fetched_without_a_sniff(sluice, tmp_path):
    """A key of S3's longest (1 KB) put the URL past the 1 KiB the decode
    stage copied it into before reading its extension: the '.jpg' was cut
    off, the image taken for a name that says nothing, and its first bytes
    fetched by a ranged GET before the image itself (against a store that
    ignores Range, a failed row)."""
    key = "in/" + "x" * 1015 + ".jpg"
    with Store() as store, FakeServer(lambda h, n, body: completion(h)) as engine:
        store.objects = {key: sample_images()[0].read_bytes()}
        r = caption_s3(sluice, store, "s3://b/in/", tmp_path / "o", engine.url)
    assert r.returncode == 0, r.stderr
    assert [row["caption"] for row in rows_by_id(tmp_path / "o").values()] == ["a fake caption"]
    assert [p for m, p, q in store.log if p == f"/b/{key}"] == [f"/b/{key}"]  # one GET ...
    assert store.ranged == []  # ... of the whole image


def test_a_multipart_completion_answered_200_with_an_error_is_retried(tmp_path):
    """S3 may answer CompleteMultipartUpload 200 and then an error document
    (AWS: retry it). The upload was aborted at the first such answer: now
    it is retried as any S3 request is (AWS_MAX_ATTEMPTS tries in all), and
    aborted after the last, naming the object and the store's words."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((5 << 20) + 1))  # two parts of 5 MiB
    tool = os.environ.get("SLUICE_S3_TOOL", "build/tests/tools/s3_tool")
    error = (200, b"<Error><Code>InternalError</Code><Message>We encountered an internal "
                  b"error. Please try again.</Message></Error>")
    with Store() as store:
        for answers, ok in (([error, store.complete[0]], True), ([error], False)):
            store.complete = answers
            store.log.clear()
            r = subprocess.run([tool, "upload", big, "s3://b/out/big.bin", str(5 << 20)],
                               env=store.env, capture_output=True, text=True, timeout=60)
            completions = [q for m, p, q in store.log if m == "POST" and "uploadId" in q]
            aborts = [q for m, p, q in store.log if m == "DELETE"]
            if ok:  # the second try completes it
                assert r.returncode == 0, r.stderr
                assert (len(completions), aborts) == (2, [])
            else:  # AWS_MAX_ATTEMPTS=2: two tries, then the abort
                assert r.returncode == 1
                assert r.stderr == (
                    f"s3_tool: completing the multipart upload: POST s3://b/out/big.bin "
                    f"({store.url}): HTTP 200 InternalError: We encountered an internal error. "
                    f"Please try again.\n")
                assert (len(completions), aborts) == (2, ["uploadId=u1"])
