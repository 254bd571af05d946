"""A local stand-in for the Hugging Face hub's file API (no hub is reachable
here): the routes huggingface_hub and sluice use, laid out the same way.

  GET  /api/models/ORG/REPO/revision/REV   {"sha": COMMIT, "siblings": [{"rfilename": F}]}
  HEAD/GET /ORG/REPO/resolve/REV/FILE      .gguf files answer 302 to /lfs/... with
                                           X-Repo-Commit and X-Linked-Size, as the hub
                                           does for LFS files; others answer directly
  GET  /lfs/ORG/REPO/FILE                  the bytes; honours Range (206)

Faults for tests: `drop_once[file] = n` sends only n bytes of the first full
GET of `file` then closes; `lie_size[file] = n` makes the hub list size n;
`raw[path] = bytes` answers that exact path (HEAD or GET) with the bytes, as
a hostile hub would answer whatever a client asks.
Every request is logged as (method, path, Range header)."""
import http.server
import json

from localserver import LocalServer


class Hub(LocalServer):
    def __init__(self, repos: dict, commit: str = "0123456789abcdef0123456789abcdef01234567"):
        self.repos = repos  # {"org/repo": {"file": bytes}}
        self.commit = commit
        self.log = []
        self.drop_once = {}
        self.lie_size = {}
        self.raw = {}
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
                if self.path in hub.raw:
                    return self.send_bytes(head, hub.raw[self.path], self.path)
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
