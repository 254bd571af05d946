"""Real servers for the openai engine's end-to-end tests: llama-server
processes on free loopback ports, and a small HTTP proxy (stdlib only) that
sits in front of one, records every request and its answer, and can inject
faults (429 with Retry-After, 500, 503, a hang past the client's timeout, a
dropped connection) on a planned share of requests; and a fake server (no
model) for the answers only a misbehaving server gives: 429 forever, a
Retry-After of a day, a stream or a body without end. Every wait is
bounded."""
import hashlib
import http.client
import http.server
import json
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from localserver import LocalServer, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"


class LlamaServer:
    """llama-server on the tiny model; a context manager."""

    def __init__(self, prefix: pathlib.Path, log: pathlib.Path, parallel: int = 4, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [str(prefix / "bin" / "llama-server"), "-m", str(TINY / "model.gguf"),
               "--mmproj", str(TINY / "mmproj.gguf"), "--parallel", str(parallel),
               "--port", str(self.port), "--host", "127.0.0.1", "-t", "1", *map(str, extra)]
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"llama-server not ready: {self.log.read_text()[-2000:]}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self.wait_ready()

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def chat(url: str, body: bytes, headers=None, timeout=120):
    """POST one chat completion; (status, parsed JSON)."""
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Proxy(LocalServer):
    """Forwards to `upstream`; records (time, body, status, answer) per
    attempt. plan(body_sha) -> a list of faults for that body's first
    attempts, each one of "429", "500", "503", "hang" (no answer until the
    client gives up), "drop" (the connection closes mid-answer), "cut" (the
    server's real answer, cut off halfway: a stream that breaks). `answer` is
    the parsed JSON, or the raw bytes of a streamed (event-stream) answer."""

    def __init__(self, upstream: str, plan=None, hang_s: float = 3.0):
        self.upstream = upstream.removeprefix("http://")
        self.plan = plan or (lambda sha: [])
        self.hang_s = hang_s
        self.lock = threading.Lock()
        self.attempts = {}  # body sha -> attempts seen
        self.log = []       # dicts: t, sha, body, fault, status, answer
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method, body):
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization")}
                conn.request(method, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.upstream_type = r.getheader("Content-Type", "application/json")
                return r.status, data

            def _reply(self, status, data, extra=(), content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                status, data = self._forward("GET", None)
                self._reply(status, data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sha = hashlib.sha256(body).hexdigest()
                with proxy.lock:
                    n = proxy.attempts.get(sha, 0)
                    proxy.attempts[sha] = n + 1
                faults = proxy.plan(sha)
                fault = faults[n] if n < len(faults) else None
                entry = {"t": time.monotonic(), "sha": sha, "body": body, "fault": fault,
                         "status": None, "answer": None}
                with proxy.lock:
                    proxy.log.append(entry)
                if fault in ("429", "500", "503"):
                    msg = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
                    entry["status"] = int(fault)
                    self._reply(int(fault), msg, [("Retry-After", "1")] if fault == "429" else [])
                    return
                if fault in ("hang", "drop"):
                    # A drop cuts the answer short: curl quietly resends a
                    # request whose reused connection closed before any
                    # answer, so a plain close is not always seen.
                    if fault == "hang":
                        time.sleep(proxy.hang_s)
                    else:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{")
                        self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, data = self._forward("POST", body)
                if fault == "cut":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
                                     + data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                entry["status"] = status
                streamed = self.upstream_type.startswith("text/event-stream")
                entry["answer"] = data if streamed else json.loads(data) if data else None
                self._reply(status, data, content_type=self.upstream_type)

        super().__init__(Handler)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text: str, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class FakeServer(LocalServer):
    """An OpenAI-compatible server without a model, for the answers a real one
    gives only when it misbehaves: GET /v1/models lists `models` ("fake"), and each POST
    /v1/chat/completions is answered by `answer(handler, n, body)`, n counting
    the attempts of that body (0 the first); the functions below write the
    usual kinds. `log` holds (time, body sha, attempt) per POST. Anything
    endless stops after `limit_s` per connection, so every wait is bounded."""

    def __init__(self, answer, limit_s: float = 20.0, models=("fake",)):
        self.answer = answer
        self.models = models
        self.limit_s = limit_s
        self.lock = threading.Lock()
        self.attempts = {}
        self.log = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                reply(self, 200, json.dumps({"object": "list", "data": [
                    {"id": m, "object": "model"} for m in fake.models]}).encode())

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sha = hashlib.sha256(body).hexdigest()
                with fake.lock:
                    n = fake.attempts.get(sha, 0)
                    fake.attempts[sha] = n + 1
                    fake.log.append((time.monotonic(), sha, n))
                self.sha = sha  # the body's, as in `log`
                fake.answer(self, n, json.loads(body))

        super().__init__(Handler)


def reply(handler, status, data: bytes, headers=(), content_type="application/json"):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for k, v in headers:
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def completion(handler, text="a fake caption", delay_s=0.0):
    time.sleep(delay_s)
    reply(handler, 200, json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode())


def too_many_requests(handler, retry_after=None):
    reply(handler, 429, json.dumps({"error": {"message": "rate limited, slow down",
                                              "type": "rate_limit"}}).encode(),
          [("Retry-After", str(retry_after))] if retry_after is not None else [])


def endless(handler, status, head: bytes, piece: bytes, content_type, limit_s: float):
    """`head`, then `piece` again and again until the client hangs up (or
    limit_s passes), with no length: the answer ends only with the
    connection."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    deadline = time.monotonic() + limit_s
    try:
        handler.wfile.write(head)
        while time.monotonic() < deadline:
            handler.wfile.write(piece * 64)
    except (BrokenPipeError, ConnectionResetError):
        pass
