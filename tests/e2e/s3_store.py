"""moto's S3 server, and an HTTP/1.1 proxy in front of it, for the S3
tests (test_s3.py, test_mpi.py) and bench/s3.py.

moto_store() starts moto's server on a free port for the time of a `with`
and gives the environment that points sluice at it and a boto3 client.

moto's server (werkzeug) closes every connection after one answer, so it
cannot show whether a client keeps its connections; this proxy keeps them
(HTTP/1.1 keep-alive toward the client) and counts the connections it
accepted, the server's side of "how many handshakes". It forwards every
request, logs its method, path, Range header and the body bytes sent back,
answers 503 SlowDown (once) to the first request `throttle` picks and
403 AccessDenied to every request `refuse` picks. moto
checks no signature, so forwarding signed requests unchanged is fine.

connect_delay_s (bench/s3.py) holds each new connection that long before
its first answer: what a TCP and TLS handshake over a network would cost,
which loopback does not."""
import contextlib
import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from localserver import free_port

SECRET = "s3cr3t-never-printed"


@contextlib.contextmanager
def moto_store():
    """(env, client): os.environ plus the AWS_* variables naming a moto
    server started here, and a boto3 client of it."""
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        # Up once it answers: 100 tries of 0.1 s gave up quietly after ~10 s
        # (moto's imports on a loaded machine), and the test went on to a
        # server not there yet.
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start at {url} (exit {proc.poll()})")
                time.sleep(0.1)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_ENDPOINT_URL=url, AWS_REGION="us-east-1")
        import boto3
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="AKIATESTKEY",
                              aws_secret_access_key=SECRET, region_name="us-east-1")
        yield env, client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class CountingProxy:
    def __init__(self, upstream, connect_delay_s=0.0, log=True):
        host = urlsplit(upstream)
        self.log = []
        self.queries = []  # each logged request's query string, beside its log entry
        self.throttle = None
        self.throttled = []
        self.refuse = None
        self.connections = 0
        self.requests = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: with Nagle's algorithm
            # the body waits for the client's delayed ACK (40 ms) on a kept
            # connection
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                with lock:
                    proxy.connections += 1
                if connect_delay_s:
                    time.sleep(connect_delay_s)

            def forward(self):
                with lock:
                    proxy.requests += 1
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                rng = self.headers.get("Range")
                path = self.path.split("?", 1)[0]
                refused = proxy.refuse and proxy.refuse(self.command, self.path, rng)
                if refused or (proxy.throttle and proxy.throttle(self.command, self.path, rng)):
                    if not refused:
                        proxy.throttle = None
                        proxy.throttled.append((self.command, self.path, rng))
                    data = (b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
                            if refused else
                            b"<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>")
                    self.send_response(403 if refused else 503)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
                conn.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items()})
                resp = conn.getresponse()
                data = resp.read()
                if log:
                    proxy.log.append((self.command, path, rng, resp.status, len(data)))
                    proxy.queries.append(self.path.partition("?")[2])
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length",
                                         "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self, path):
        return [e for e in self.log if e[0] == "GET" and e[1] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
