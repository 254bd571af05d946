"""Peers that misbehave: image URL servers, OpenAI-compatible servers and S3
stores answering what no sound one does. Each costs the row(s) concerned a
failure naming the input and the cause, and the run goes on. The engine is
a FakeServer (no model), so each run takes a second or so."""
import http.server
import json

from conftest import sample_images
from localserver import LocalServer
from openai_helpers import FakeServer, completion


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


class OddImageHandler(http.server.BaseHTTPRequestHandler):
    """empty: 200 with no body; moved: a 302 with a page and no Location
    (nothing to follow); ok: an image; each with any extension. Counts GETs
    per path."""
    protocol_version = "HTTP/1.1"
    hits: dict = {}

    def do_GET(self):
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        status, body = {"/empty": (200, b""),
                        "/moved": (302, b"<html>it moved somewhere</html>"),
                        "/ok": (200, sample_images()[0].read_bytes())}[self.path.split(".")[0]]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_empty_or_unfollowed_answer_to_an_image_url_names_the_url(sluice, tmp_path):
    """A 200 with no body was taken for "not fetched" and the URL opened as a
    local file ('URL: cannot open: No such file or directory'); a 3xx with
    no Location was decoded as if its page were the image, and its answer
    to the ranged read that sniffs a name without an image extension was
    "HTTP 302 without a Content-Range giving the file's size"."""
    OddImageHandler.hits = {}
    with LocalServer(OddImageHandler) as images, \
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
    assert OddImageHandler.hits == {"/empty.jpg": 1, "/empty": 2, "/moved.jpg": 1, "/moved": 1,
                                    "/ok.jpg": 1}


class NotFoundHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_cause_of_a_failure_survives_a_long_url(sluice, tmp_path):
    """Messages were cut at 1 KiB before their secrets were hidden: a
    presigned URL holding a session token (1.5 KB, as STS tokens make them)
    that answered 404 failed its row with the URL cut inside the token,
    and neither the rest of the URL nor 'HTTP 404' in the error."""
    token = "IQoJb3JpZ2luX2VjE" + "Ab9" * 400
    with LocalServer(NotFoundHandler) as images, \
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

