"""bench/http_bench.py — the openai engine's figures (make bench-http). Prints
human lines, then one JSON object as the last line. Not a test.

1. client_us_per_request, max_requests_per_s_one_core: build/bench/http on
   CPU 0 against nginx (Debian's nginx-light, non-daemon, a temporary
   config) on CPU 1 answering every POST with a fixed chat completion.
2. images_per_s_openai vs images_per_s_embedded: `sluice caption` on the
   same images (the samples, copied with a pixel changed per copy) and the
   tiny model, through llama-server --parallel N and with the embedded
   engine --parallel N, the same threads; interleaved pairs, medians of
   --runs (rates and per-pair ratios).

    .venv/bin/python bench/http_bench.py [--requests N] [--copies C] [--parallel N]
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
TINY = REPO / "models" / "tiny"
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "static",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "A fixed caption for the bench."}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def nginx_figures(tmp, requests, in_flight):
    port = free_port()
    conf = tmp / "nginx.conf"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir()
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location /v1/models {{ return 200 '{{"object":"list","data":[{{"id":"static"}}]}}'; }}
        location / {{ return 200 '{COMPLETION}'; }}
    }}
}}
""")
    nginx = subprocess.Popen(["taskset", "-c", "1", "/usr/sbin/nginx", "-p", str(tmp), "-c",
                              str(conf), "-e", str(tmp / "error.log")])
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        r = subprocess.run([str(BUILD / "bench" / "http"), "--endpoint",
                            f"http://127.0.0.1:{port}", "--requests", str(requests),
                            "--in-flight", str(in_flight), "--cpu", "0"],
                           capture_output=True, text=True, timeout=600)
        print(r.stdout.strip().splitlines()[0] if r.stdout else r.stderr, flush=True)
        if r.returncode != 0:
            sys.exit(f"bench/http failed: {r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def images_per_s(stderr_stdout):
    m = re.search(r"(\d+) images: (\d+) captioned, (\d+) failed in ([\d.]+) s", stderr_stdout)
    if not m or m.group(3) != "0":
        sys.exit(f"the caption run failed:\n{stderr_stdout[-3000:]}")
    return int(m.group(1)) / float(m.group(4))


def unique_copies(images, copies, kind):
    """The samples `copies` times over, each copy's pixels a little
    different (so no cache anywhere can answer for an image seen before).
    kind "jpeg": at most 512 px, quality 90 - cheap to decode, so the engines
    and not the decode stage set the pace; "png": full size, lossless - the
    decode stage costs about as much as the engine, on the same 2 cores."""
    from PIL import Image
    n = 0
    for src in sorted((REPO / "samples").rglob("*")):
        if not src.is_file() or src.suffix == ".md":
            continue
        img = Image.open(src).convert("RGB")
        if kind == "jpeg":
            img.thumbnail((512, 512))
        for i in range(copies):
            dst = images / f"c{i:02d}" / src.relative_to(REPO / "samples")
            dst = dst.with_suffix(".jpg" if kind == "jpeg" else ".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            marked = img.copy()
            marked.putpixel((0, 0), (i * 37 % 256, i * 91 % 256, 255 - i))
            marked.save(dst, quality=90) if kind == "jpeg" else marked.save(dst)
            n += 1
    return n


def request_bodies(images, max_tokens):
    """What sluice sends for each image by default (the decoded image at most
    512 px, a quality-90 JPEG, the default prompt), made ahead with Pillow."""
    import base64
    import io
    from PIL import Image
    bodies = []
    for path in sorted(p for p in images.rglob("*") if p.is_file()):
        img = Image.open(path).convert("RGB")
        img.thumbnail((512, 512))
        jpeg = io.BytesIO()
        img.save(jpeg, "JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
        bodies.append(json.dumps({
            "model": "tiny", "max_tokens": max_tokens, "temperature": 0.0, "seed": 0,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Describe this image in one sentence."}]}]}).encode())
    return bodies


def server_capacity(port, bodies, concurrency):
    """images/s of the server alone: the requests made ahead, sent by
    `concurrency` threads on kept-alive connections (a client costing next
    to nothing, the ceiling for any client on this machine)."""
    import concurrent.futures
    import http.client
    import threading
    local = threading.local()

    def send(body):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        local.conn.request("POST", "/v1/chat/completions", body=body,
                           headers={"Content-Type": "application/json"})
        r = local.conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit(f"the server answered {r.status}: {data[:300]!r}")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, bodies))
    return len(bodies) / (time.monotonic() - t0)


def llama_server(tmp, parallel, threads):
    """llama-server on the tiny model, ready: (the process, its port)."""
    prefix = pathlib.Path((REPO / "build" / "llama-prefix").read_text().strip())
    port = free_port()
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen([str(prefix / "bin" / "llama-server"), "-m", str(TINY / "model.gguf"),
                               "--mmproj", str(TINY / "mmproj.gguf"), "--parallel", str(parallel),
                               "--port", str(port), "--host", "127.0.0.1", "-t", str(threads),
                               # No RAM prompt cache: later runs send the same images, and
                               # a restored prompt would skip their encoding (the embedded
                               # engine encodes every image every run).
                               "--cache-ram", "0"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
    except BaseException:
        server.kill()
        raise
    return server, port


def caption_figures(tmp, copies, parallel, threads, max_tokens, runs, openai_extra=(),
                    kind="jpeg"):
    images = tmp / "images"
    n_images = unique_copies(images, copies, kind)
    sluice = str(BUILD / "sluice")
    common = ["--max-tokens", str(max_tokens), "--metrics-addr", "off", "--show", "0",
              "--overwrite"]

    def run_embedded():
        r = subprocess.run([sluice, "caption", str(images), "-o", str(tmp / "embedded"), "--model",
                            str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                            "--parallel", str(parallel), "--threads", str(threads), *common],
                           capture_output=True, text=True, timeout=1200)
        return images_per_s(r.stdout + r.stderr)
    server, port = llama_server(tmp, parallel, threads)
    try:

        def run_openai():
            r = subprocess.run([sluice, "caption", str(images), "-o", str(tmp / "openai"),
                                "--engine", "openai", "--endpoint", f"http://127.0.0.1:{port}",
                                "--max-in-flight", str(2 * parallel), *openai_extra, *common],
                               capture_output=True, text=True, timeout=1200)
            return images_per_s(r.stdout + r.stderr)

        # Interleaved runs; medians of the rates and of the per-run ratios
        # (a triple runs back to back, so load from elsewhere mostly cancels).
        bodies = request_bodies(images, max_tokens)
        triples = []
        for _ in range(runs):
            e, o = run_embedded(), run_openai()
            c = server_capacity(port, bodies, 2 * parallel)
            triples.append((e, o, c))
            print(f"  run: embedded {e:.2f} images/s, openai {o:.2f} ({o / e:.3f}), "
                  f"server alone {c:.2f} ({o / c:.3f})", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    embedded = statistics.median(t[0] for t in triples)
    openai = statistics.median(t[1] for t in triples)
    capacity = statistics.median(t[2] for t in triples)
    ratio = statistics.median(o / e for e, o, _ in triples)
    of_capacity = statistics.median(o / c for _, o, c in triples)
    print(f"embedded engine, --parallel {parallel}, {threads} threads: {embedded:.2f} images/s",
          flush=True)
    print(f"openai engine -> llama-server --parallel {parallel}, {threads} threads: "
          f"{openai:.2f} images/s; the server alone (requests made ahead): {capacity:.2f}",
          flush=True)
    return {"images": n_images, "inputs": kind,
            "parallel": parallel, "threads": threads, "max_tokens": max_tokens,
            "images_per_s_openai": round(openai, 2), "images_per_s_embedded": round(embedded, 2),
            "openai_vs_embedded": round(ratio, 3),
            "images_per_s_server_alone": round(capacity, 2),
            "openai_vs_server_alone": round(of_capacity, 3), "runs": runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--openai-args", default="", help="more sluice options for the openai runs")
    ap.add_argument("--skip-nginx", action="store_true")
    ap.add_argument("--inputs", choices=("jpeg", "png"), default="jpeg")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-http-") as d:
        tmp = pathlib.Path(d)
        (tmp / "nginx").mkdir()
        out = {} if a.skip_nginx else nginx_figures(tmp / "nginx", a.requests, a.in_flight)
        out.update(caption_figures(tmp, a.copies, a.parallel, a.threads, a.max_tokens,
                                   a.runs, a.openai_args.split(), a.inputs))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
