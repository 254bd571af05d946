"""An http.server on a free local port, serving from a thread for the span
of a `with` block: the base of the test servers (hub, proxy, URL images)."""
import http.server
import random
import re
import socket
import threading


_handed_out: set[int] = set()


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive free loopback ports (rank r of an MPI
    job serves at the port + r), for a server started later to bind. Below
    the kernel's ephemeral range (32768-60999 here): a port that bind(0)
    hands out is released before the server binds it, and any connect() on
    the machine (Prometheus's scrapes, a client, another test running
    beside) may take it as its local port meanwhile, and the server then
    fails to start; ports down here are never handed out that way. Nor
    twice by this process: two servers given ports before either binds
    (a test's llama-servers, its sluice's metrics) would otherwise share
    one now and then."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        ports = set(range(base, base + count))
        if ports & _handed_out:
            continue
        socks = []
        try:
            for k in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            _handed_out.update(ports)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports in 20000-32000")


def free_port() -> int:
    """A free loopback port for a server started later (see free_ports)."""
    return free_ports(1)


class LocalServer:
    def __init__(self, handler):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def answering(answer):
    """A handler whose GETs `answer(path)` answers: (status, body) or
    (status, body, [(header, value), ...]), sent with its Content-Length
    over HTTP/1.1; no log."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            status, body, *headers = answer(self.path)
            self.send_response(status)
            for k, v in headers[0] if headers else ():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def byte_range(header, size):
    """(status, first, last) for a Range header (bytes=A-B, A-, -N) on a body
    of `size` bytes: 206 and the slice, 416 past the end, 200 and all of it
    for no (or another kind of) Range."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
    if not m or not (m.group(1) or m.group(2)):
        return 200, 0, size - 1
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        first = max(0, size - int(m.group(2)))
        last = size - 1
    return (416, first, last) if first >= size else (206, first, last)


def send_416(handler, size):
    handler.send_response(416)
    handler.send_header("Content-Range", f"bytes */{size}")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files as object stores and most web servers do: a GET with a
    Range header (bytes=A-B, A-, -N) gets a 206 with that slice and its
    Content-Range, or a 416 past the end. Paths under /plain/ ignore Range
    (a 200 with the whole file, as http.server itself answers). Each GET
    is logged in the class's `log` as (path, Range, status, body bytes
    written before the client hung up), in the order the requests arrived
    (a GET that is still writing when the next arrives keeps its place).
    Use functools.partial(RangeHandler, directory=...) and reset `log` per
    test."""
    protocol_version = "HTTP/1.1"
    log: list = []
    log_lock = threading.Lock()

    def _log_slot(self, entry):
        with self.log_lock:
            self.log.append(entry)
            return len(self.log) - 1

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        plain = path.startswith("/plain/")
        fs = self.translate_path(path[len("/plain"):] if plain else path)
        rng = self.headers.get("Range")
        try:
            with open(fs, "rb") as f:
                data = f.read()
        except OSError:
            self._log_slot((path, rng, 404, 0))
            self.send_error(404)
            return
        status, first, last = byte_range(None if plain else rng, len(data))
        if status == 416:
            self._log_slot((path, rng, 416, 0))
            send_416(self, len(data))
            return
        slot = self._log_slot((path, rng, status, 0))
        body = data[first:last + 1]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = 0
        try:
            for i in range(0, len(body), 65536):
                self.wfile.write(body[i:i + 65536])
                sent += len(body[i:i + 65536])
        except OSError:
            self.close_connection = True
        with self.log_lock:
            self.log[slot] = (path, rng, status, sent)

    def log_message(self, *args):
        pass
