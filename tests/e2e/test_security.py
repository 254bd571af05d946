"""sluice over data and peers it cannot trust, on a machine it shares
(docs/security.md): what others may put in the output folder, what the
data's ids and answers may hold when they reach a file name or a page,
and what a job file written by someone else may make it do. The engine is
a FakeServer (no model), so each run takes a second or so."""
import html.parser
import json
import os
import re
import subprocess
import tarfile

from conftest import sample_images
from openai_helpers import FakeServer, completion, reply

HOSTILE_CAPTION = ('</div></figcaption><script>alert("caption")</script>'
                   '<img src=x onerror="alert(1)"> & \'q\'')
HOSTILE_IDS = ['"><script>alert("id")</script>', "<img src=x onerror=alert(2)>",
               "../../escape/x", "/etc/passwd", "a\nb\x1b[31m", "..", "."]


def caption(sluice, inputs, out, engine_url, *extra, timeout=120, env=None):
    return subprocess.run(
        [str(sluice.binary), "caption", str(inputs), "-o", str(out), "--engine", "openai",
         "--endpoint", engine_url, "--metrics-addr", "off", *map(str, extra)],
        capture_output=True, text=True, timeout=timeout, env=env)


def hostile_manifest(path):
    images = sample_images()
    rows = [{"image_id": k, "image": str(images[i % len(images)])}
            for i, k in enumerate(HOSTILE_IDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_failed_row(sluice, tmp_path, answer):
    """One image captioned into tmp_path/o by a FakeServer answering with
    `answer`, one attempt, its row failing: the run and the row."""
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jpg").symlink_to(sample_images()[0])
    with FakeServer(answer) as engine:
        r = caption(sluice, inp, tmp_path / "o", engine.url, "--max-attempts", "1")
    assert r.returncode == 3, r.stderr
    return r, json.loads((tmp_path / "o" / "part-00000.jsonl").read_text())


def files_under(root):
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_temporaries_in_the_output_folder_are_never_written_through_a_symlink(sluice, tmp_path):
    """The report's, the metrics' and the parts' temporaries have names
    known in advance (._summary.json.tmp, ._report.html.tmp,
    _metrics.prom.tmp, .part-N.EXT.tmp-PID): another user who may write in
    a shared output folder put a symlink there under such a name, and the
    run truncated the file it named and wrote the report into it (the
    user's ~/.bashrc, say). The link is replaced by a file of the run's
    own; the files the links named keep their bytes."""
    out = tmp_path / "shared-out"
    out.mkdir()
    victims = {}
    for name in ("._summary.json.tmp", "._report.html.tmp", "_metrics.prom.tmp"):
        victim = tmp_path / f"victim-{name.strip('._')}"
        victim.write_text(f"the user's own {name}\n")
        (out / name).symlink_to(victim)
        victims[victim] = victim.read_bytes()
    # What the run removes as its own (a killed run's temporaries, the
    # names an older sluice gave the report) goes by unlink: a link there
    # is removed, never the file it names, even one holding what an older
    # sluice's summary held.
    removed = {".part-00000.jsonl.tmp-1": "rows\n", ".errors-00000.jsonl.tmp-1": "errors\n",
               "summary.json": '{"report": "report.html"}\n'}
    for name, text in removed.items():
        victim = tmp_path / f"victim-{name.strip('.')}"
        victim.write_text(text)
        (out / name).symlink_to(victim)
        victims[victim] = victim.read_bytes()
    with FakeServer(lambda h, n, body: completion(h)) as engine:
        r = caption(sluice, hostile_manifest(tmp_path / "m.jsonl"), out, engine.url,
                    "--id-column", "image_id")
    assert r.returncode == 0, r.stderr
    for victim, before in victims.items():
        assert victim.read_bytes() == before, victim
    assert not any((out / name).is_symlink() for name in removed)
    for name in ("_summary.json", "_report.html", "_metrics.prom"):
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    assert json.loads((out / "_summary.json").read_text())["rows"]["ok"] == len(HOSTILE_IDS)


def test_a_temporary_name_that_cannot_be_taken_says_what_to_do(sluice, tmp_path):
    """What stands at a temporary's name and cannot be removed (here a
    folder; in a shared folder, another user's file) made the run say
    only 'File exists'. It now says why and what to do."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "._summary.json.tmp").mkdir()
    (out / "._summary.json.tmp" / "x").write_text("keep\n")
    with FakeServer(lambda h, n, body: completion(h)) as engine:
        r = caption(sluice, hostile_manifest(tmp_path / "m.jsonl"), out, engine.url,
                    "--id-column", "image_id")
    assert r.returncode == 0, r.stderr  # the rows are written; the report is not
    assert f"cannot write '{out}/._summary.json.tmp': a file stands at that name that sluice " \
           "cannot remove" in r.stderr and "write to a folder of your own" in r.stderr, r.stderr
    assert (out / "._summary.json.tmp" / "x").read_text() == "keep\n"


def test_ids_from_the_data_never_name_a_file(sluice, tmp_path):
    """Ids are the data's (--id-column): '../../escape/x', '/etc/passwd',
    '..', a newline. Whatever the format, sluice writes only its own names
    into -o (part-N, samples N_M in a WebDataset shard) and nothing beside
    it; the ids stay whole in the rows."""
    manifest = hostile_manifest(tmp_path / "m.jsonl")
    before = files_under(tmp_path)
    with FakeServer(lambda h, n, body: completion(h)) as engine:
        for fmt in ("jsonl", "parquet", "webdataset"):
            out = tmp_path / "nest" / fmt
            r = caption(sluice, manifest, out, engine.url, "--id-column", "image_id",
                        "--format", fmt)
            assert r.returncode == 0, (fmt, r.stderr)
    made = files_under(tmp_path) - before
    assert made and all(p.is_relative_to(tmp_path / "nest") for p in made), made
    ours = re.compile(r"(part-\d{5}\.(jsonl|parquet|tar)|_summary\.json|_report\.html|"
                      r"_metrics\.prom|_sluice_ledger\.sqlite(-wal|-shm)?)")
    assert all(ours.fullmatch(p.name) and p.parent.parent == tmp_path / "nest"
               for p in made), sorted(map(str, made))
    with tarfile.open(tmp_path / "nest" / "webdataset" / "part-00000.tar") as tar:
        names = tar.getnames()
    # (images named by a path stay out of the shard: a JSON and a caption
    # member a row)
    assert sorted(names) == [f"00000_{i:06d}.{ext}" for i in range(len(HOSTILE_IDS))
                             for ext in ("json", "txt")], names
    rows = [json.loads(line) for line in
            (tmp_path / "nest" / "jsonl" / "part-00000.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(HOSTILE_IDS)


class _Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of each caption."""

    def __init__(self):
        super().__init__()
        self.tags, self.captions, self.ids = [], [], []
        self._into = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        cls = dict(attrs).get("class", "")
        self._into = self.captions if cls.startswith("caption") else \
            self.ids if cls == "id" else None
        if self._into is not None:
            self._into.append("")

    def handle_endtag(self, tag):
        self._into = None

    def handle_data(self, data):
        if self._into is not None:
            self._into[-1] += data


def test_the_report_shows_markup_from_the_data_as_text(sluice, tmp_path):
    """_report.html shows ids and answers that come from the data and the
    server: markup there (a <script>, an onerror attribute, a quote that
    ends an attribute) is text on the page, never an element; the page has
    no script of its own to hijack."""
    out = tmp_path / "o"
    with FakeServer(lambda h, n, body: completion(h, HOSTILE_CAPTION)) as engine:
        r = caption(sluice, hostile_manifest(tmp_path / "m.jsonl"), out, engine.url,
                    "--id-column", "image_id")
    assert r.returncode == 0, r.stderr
    page = _Tags()
    page.feed((out / "_report.html").read_text(encoding="utf-8"))
    kinds = {tag for tag, _ in page.tags}
    assert kinds <= {"html", "head", "meta", "title", "style", "body", "h1", "p", "b", "span",
                     "code", "a", "div", "figure", "img", "figcaption"}, kinds
    assert not [(t, a) for t, a in page.tags for k in a if k.startswith("on")]
    assert all(a["src"].startswith("data:image/jpeg;base64,") for t, a in page.tags if t == "img")
    assert page.captions == [HOSTILE_CAPTION] * len(HOSTILE_IDS)
    assert sorted(page.ids) == sorted(HOSTILE_IDS)
    alts = sorted(a["alt"] for t, a in page.tags if t == "img")
    assert alts == sorted(HOSTILE_IDS)


def test_a_job_file_can_send_any_environment_variable_to_a_server_it_names(sluice, tmp_path):
    """What docs/security.md warns of: a job file is a program. One written
    by someone else names the server (openai.endpoints) and the variable
    whose value goes to it as the key (openai.api_key_env): any variable of
    the environment sluice runs in, a cloud secret included. Read a job
    file before running it, as a script."""
    seen = []

    def answer(h, n, body):
        seen.append(h.headers.get("Authorization"))
        completion(h)

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jpg").symlink_to(sample_images()[0])
    with FakeServer(answer) as engine:
        job = tmp_path / "job.yaml"
        job.write_text(f"version: 1\ninput:\n  paths: ['{inp}']\n"
                       f"output:\n  dir: '{tmp_path / 'o'}'\nengine: openai\n"
                       f"openai:\n  endpoints: ['{engine.url}']\n"
                       "  api_key_env: AWS_SECRET_ACCESS_KEY\nmetrics:\n  addr: 'off'\n")
        r = subprocess.run([str(sluice.binary), "run", str(job)], capture_output=True,
                           text=True, timeout=120,
                           env={**os.environ, "AWS_SECRET_ACCESS_KEY": "aws-s3cret"})
    assert r.returncode == 0, r.stderr
    assert seen and all(a == "Bearer aws-s3cret" for a in seen), seen


def test_an_image_url_redirected_to_a_local_file_is_not_read(sluice, tmp_path):
    """An image URL in the data is fetched wherever its redirects lead, but
    only over http(s): a server answering 302 to file:///etc/passwd (or
    to another scheme libcurl speaks) fails the row, naming the URL, and
    no local file is read. An answer that is no image (what an internal
    service says) fails its row without its bytes in the error."""
    import http.server
    from localserver import LocalServer

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/c.jpg":  # an internal service's answer, no image
                body = b"internal-secret-token\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(302)
            self.send_header("Location", {"/a.jpg": "file:///etc/passwd",
                                          "/b.jpg": "ftp://127.0.0.1/x.jpg"}[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()

    with LocalServer(Redirecting) as images, \
            FakeServer(lambda h, n, body: completion(h)) as engine:
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("".join(json.dumps({"id": k, "url": f"{images.url}/{k}"}) + "\n"
                                    for k in ("a.jpg", "b.jpg", "c.jpg")))
        r = caption(sluice, manifest, tmp_path / "o", engine.url)
        assert r.returncode == 3, r.stderr
        assert engine.log == []  # nothing reached the model
    rows = {json.loads(line)["id"]: json.loads(line)
            for line in (tmp_path / "o" / "part-00000.jsonl").read_text().splitlines()}
    for k in ("a.jpg", "b.jpg", "c.jpg"):
        assert rows[k]["caption"] is None and f"{images.url}/{k}" in rows[k]["error"], rows[k]
    written = (tmp_path / "o" / "part-00000.jsonl").read_text() + r.stderr
    assert "root:" not in written and "internal-secret-token" not in written


def test_a_servers_words_reach_the_terminal_defanged(sluice, tmp_path):
    """A server's error message is quoted in the failed row's line on
    stderr: an ESC there (recolour, retitle, clear the screen) or a
    right-to-left override is printed as an escape; the row keeps it
    whole."""
    said = "bad\x1b]0;pwned\x07\x1b[2J\u202eexe.jpg"

    def answer(h, n, body):
        reply(h, 400, json.dumps({"error": {"message": said}}).encode())

    r, row = one_failed_row(sluice, tmp_path, answer)
    assert not any(c in r.stderr + r.stdout for c in "\x1b\x07\u202e"), repr(r.stderr)
    assert "bad\\x1B]0;pwned\\x07\\x1B[2J\\u202Eexe.jpg" in r.stderr, r.stderr
    assert said in row["error"], row


def test_an_engine_answer_sent_compressed_unasked_is_not_inflated(sluice, tmp_path):
    """sluice asks an engine for no compression (no Accept-Encoding), so
    libcurl inflates nothing: a gzip bomb sent anyway (20 MB of JSON in
    20 KB) stays its compressed bytes, fails its row as not JSON, and
    never grows in memory."""
    import gzip
    asked = []
    bomb = gzip.compress(b'{"choices": [' + b" " * (20 << 20) + b"]}")

    def answer(h, n, body):
        asked.append(h.headers.get("Accept-Encoding"))
        reply(h, 200, bomb, [("Content-Encoding", "gzip")])

    r, row = one_failed_row(sluice, tmp_path, answer)
    assert asked == [None]
    assert row["caption"] is None and "not JSON" in row["error"], row
