"""A local stand-in for the Hugging Face hub's file API (no hub is reachable
here): the routes huggingface_hub and sluice use, laid out the same way.

  GET  /api/models/ORG/REPO/revision/REV   {"sha": COMMIT, "siblings": [{"rfilename": F}]}
  HEAD/GET /ORG/REPO/resolve/REV/FILE      .gguf files answer 302 to /lfs/... with
                                           X-Repo-Commit and X-Linked-Size, as the hub
                                           does for LFS files; others answer directly
  GET  /lfs/ORG/REPO/FILE                  the bytes; honours Range (206)

Dataset repositories (add_dataset), as huggingface_hub's HfApi and
HfFileSystem ask for them:

  GET  /api/datasets/ORG/NAME                 {"id": ...}, or 404
  GET  /api/datasets/ORG/NAME/revision/REV    {"sha": COMMIT} (REV quoted, refs%2Fpr%2F1),
                                              404 for an unknown revision
  GET  /api/datasets/ORG/NAME/tree/REV[/PATH]?recursive=true
                                              [{"type": "file"|"directory", "path", "size",
                                              "oid"}], `tree_page` entries a page, the next
                                              page in a Link: <URL>; rel="next" header
                                              (?cursor=N); 404 for a PATH that is no folder
  GET  /datasets/ORG/NAME/resolve/REV/PATH    302 to the CDN: /lfs/datasets/ORG/NAME/COMMIT/PATH
                                              on http://localhost:PORT (another host name than
                                              the hub's 127.0.0.1, so a token must not follow)
  GET  /lfs/datasets/ORG/NAME/COMMIT/PATH     the bytes, with Range (A-B, A-, -N: 206; past the
                                              end: 416)
A private dataset answers 401 to the API and resolve routes unless the
request carries `Authorization: Bearer <token>` (Hub.token); with
`fail_lfs` set, the CDN answers the first GET of each (path, Range) with 503
(the run's and the count's reads alike, whichever comes first).

Faults for tests: `drop_once[file] = n` sends only n bytes of the first full
GET of `file` then closes; `lie_size[file] = n` makes the hub list size n;
`raw[path] = bytes` answers that exact path (HEAD or GET) with the bytes, as
a hostile hub would answer whatever a client asks.
Every request is logged as (method, path, Range header) in `log`, and as a
dict with its Host and Authorization headers too in `requests`."""
import hashlib
import http.server
import json
from urllib.parse import parse_qs, quote, unquote, urlsplit

from localserver import LocalServer, byte_range, send_416


class Hub(LocalServer):
    def __init__(self, repos: dict, commit: str = "0123456789abcdef0123456789abcdef01234567"):
        self.repos = repos  # {"org/repo": {"file": bytes}}
        self.commit = commit
        self.log = []
        self.drop_once = {}
        self.lie_size = {}
        self.raw = {}
        self.requests = []
        self.datasets = {}  # {"org/name": {"refs": {REV: COMMIT}, "commits": {COMMIT: {path: bytes}}}}
        self.private = set()
        self.token = None
        self.tree_page = 1000
        self.fail_lfs = False
        self.failed_lfs = set()
        self.loop = ()  # path prefixes answered 302 to themselves
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.handle_any(head=True)

            def do_GET(self):
                self.handle_any(head=False)

            def send_json(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def not_found(self, head):
                body = b'{"error":"Entry not found"}'
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def handle_any(self, head):
                hub.log.append((self.command, self.path, self.headers.get("Range")))
                hub.requests.append({"method": self.command, "path": self.path,
                                     "range": self.headers.get("Range"),
                                     "host": self.headers.get("Host"),
                                     "auth": self.headers.get("Authorization")})
                if self.path.startswith(hub.loop or ("\0",)):
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in hub.raw:
                    return self.send_bytes(head, hub.raw[self.path], self.path)
                if self.path.startswith(("/api/datasets/", "/datasets/", "/lfs/datasets/")):
                    return self.dataset_route(head)
                parts = self.path.split("/")
                if parts[1:3] == ["api", "models"] and len(parts) >= 7:
                    repo = "/".join(parts[3:5])
                    if repo not in hub.repos:
                        return self.not_found(head)
                    return self.send_json(200, {
                        "id": repo, "sha": hub.commit,
                        "siblings": [{"rfilename": f} for f in sorted(hub.repos[repo])]})
                if len(parts) >= 6 and parts[3] == "resolve":
                    repo, file = "/".join(parts[1:3]), "/".join(parts[5:])
                    data = hub.repos.get(repo, {}).get(file)
                    if data is None:
                        return self.not_found(head)
                    size = hub.lie_size.get(file, len(data))
                    if file.endswith(".gguf"):
                        self.send_response(302)
                        self.send_header("Location", f"/lfs/{repo}/{file}")
                        self.send_header("X-Repo-Commit", hub.commit)
                        self.send_header("X-Linked-Size", str(size))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    return self.send_bytes(head, data, file)
                if parts[1] == "lfs":
                    repo, file = "/".join(parts[2:4]), "/".join(parts[4:])
                    data = hub.repos.get(repo, {}).get(file)
                    if data is None:
                        return self.not_found(head)
                    return self.send_bytes(head, data, file)
                return self.not_found(head)

            def dataset_route(self, head):
                url = urlsplit(self.path)
                parts = url.path.split("/")
                api = parts[1] == "api"
                if parts[1] == "lfs":  # the CDN: no token asked, as a signed URL
                    key = (url.path, self.headers.get("Range"))
                    if hub.fail_lfs and not head and key not in hub.failed_lfs:
                        hub.failed_lfs.add(key)
                        return self.send_json(503, {"error": "try again"})
                    repo, sha, file = "/".join(parts[3:5]), parts[5], "/".join(parts[6:])
                    data = hub.datasets.get(repo, {}).get("commits", {}).get(sha, {}).get(unquote(file))
                    if data is None:
                        return self.not_found(head)
                    return self.send_range(head, data)
                base = 3 if api else 2
                repo = "/".join(parts[base:base + 2])
                ds = hub.datasets.get(repo)
                if repo in hub.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self.send_json(401, {"error": "Invalid credentials"})
                if ds is None:
                    return self.send_json(404, {"error": "Repository not found"})
                rest = parts[base + 2:]
                if api and not rest:
                    return self.send_json(200, {"id": repo})
                if len(rest) < 2:
                    return self.not_found(head)
                rev = unquote(rest[1])
                sha = ds["refs"].get(rev, rev if rev in ds["commits"] else None)
                if sha is None:
                    return self.send_json(404, {"error": f"Invalid rev id: {rev}"})
                files = ds["commits"][sha]
                if api and rest[0] == "revision":
                    return self.send_json(200, {"id": repo, "sha": sha,
                                                "siblings": [{"rfilename": f} for f in sorted(files)]})
                if api and rest[0] == "tree":
                    return self.tree(repo, rest[1], unquote("/".join(rest[2:])), files, url.query)
                if not api and rest[0] == "resolve":
                    file = unquote("/".join(rest[2:]))
                    if file not in files:
                        return self.not_found(head)
                    host = f"http://localhost:{hub.port}"
                    self.send_response(302)
                    self.send_header("Location", f"{host}/lfs/datasets/{repo}/{sha}/{quote(file)}")
                    self.send_header("X-Repo-Commit", sha)
                    self.send_header("X-Linked-Size", str(len(files[file])))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return self.not_found(head)

            def tree(self, repo, rev_quoted, folder, files, query):
                entries, dirs = [], set()
                for f in sorted(files):
                    if folder and not f.startswith(folder + "/"):
                        continue
                    segs = f.split("/")
                    for k in range(1, len(segs)):
                        d = "/".join(segs[:k])
                        if d not in dirs and (not folder or d.startswith(folder + "/")):
                            dirs.add(d)
                            entries.append({"type": "directory", "oid": "0" * 40, "size": 0,
                                            "path": d})
                    entries.append({"type": "file", "oid": hashlib.sha1(files[f]).hexdigest(),
                                    "size": len(files[f]), "path": f})
                if folder and not entries:
                    return self.send_json(404, {"error": f"{folder} does not exist"})
                start = int(parse_qs(query).get("cursor", ["0"])[0])
                page = entries[start:start + hub.tree_page]
                body = json.dumps(page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if start + hub.tree_page < len(entries):
                    sub = f"/{quote(folder)}" if folder else ""
                    nxt = (f"{hub.url}/api/datasets/{repo}/tree/{rev_quoted}{sub}"
                           f"?recursive=true&cursor={start + hub.tree_page}")
                    self.send_header("Link", f'<{nxt}>; rel="next"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def send_range(self, head, data):
                status, first, last = byte_range(self.headers.get("Range"), len(data))
                if status == 416:
                    return send_416(self, len(data))
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                self.send_header("Content-Length", str(last - first + 1))
                self.end_headers()
                if not head:
                    self.wfile.write(data[first:last + 1])

            def send_bytes(self, head, data, file):
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if head:
                    return
                drop = hub.drop_once.pop(file, None) if start == 0 else None
                if drop is not None:
                    self.wfile.write(data[:drop])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        super().__init__(Handler)
        self.endpoint = self.url

    def add_dataset(self, repo: str, files: dict, revision: str = "main", sha: str = None,
                    private: bool = False) -> str:
        """Files {path: bytes} as `revision` of dataset `repo`; its commit id
        (derived from the files unless given)."""
        sha = sha or hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest())
                                              for k, v in files.items())).encode()).hexdigest()
        ds = self.datasets.setdefault(repo, {"refs": {}, "commits": {}})
        ds["refs"][revision] = sha
        ds["commits"][sha] = dict(files)
        if private:
            self.private.add(repo)
        return sha
