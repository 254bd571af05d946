"""bench/http_bench.py — the openai engine's figures (make bench-http). Prints
human lines, then one JSON object as the last line. Not a test.

1. client_us_per_request, max_requests_per_s_one_core: build/bench/http on
   CPU 0 against nginx (Debian's nginx-light, non-daemon, a temporary
   config) on CPU 1 answering every POST with a fixed chat completion.
2. images_per_s_openai vs images_per_s_embedded: `sluice caption` on the
   same images (the samples, copied with a pixel changed per copy) and the
   tiny model, through llama-server --parallel N and with the embedded
   engine --parallel N, the same threads; interleaved, best of --runs.

    .venv/bin/python bench/http_bench.py [--requests N] [--copies C] [--parallel N]
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import socket
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


def unique_copies(images, copies):
    """The samples `copies` times over, each copy's pixels a little
    different: llama-server keeps a slot's last prompt, image included, and
    would skip encoding an image it has just seen."""
    from PIL import Image
    n = 0
    for src in sorted((REPO / "samples").rglob("*")):
        if not src.is_file() or src.suffix == ".md":
            continue
        img = Image.open(src).convert("RGB")
        for i in range(copies):
            dst = images / f"c{i:02d}" / src.relative_to(REPO / "samples").with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            marked = img.copy()
            marked.putpixel((0, 0), (i * 37 % 256, i * 91 % 256, 255 - i))
            marked.save(dst)
            n += 1
    return n


def caption_figures(tmp, copies, parallel, threads, max_tokens, runs):
    images = tmp / "images"
    n_images = unique_copies(images, copies)
    sluice = str(BUILD / "sluice")
    common = ["--max-tokens", str(max_tokens), "--metrics-addr", "off", "--show", "0",
              "--overwrite"]

    def run_embedded():
        r = subprocess.run([sluice, "caption", str(images), "-o", str(tmp / "embedded"), "--model",
                            str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                            "--parallel", str(parallel), "--threads", str(threads), *common],
                           capture_output=True, text=True, timeout=1200)
        return images_per_s(r.stdout + r.stderr)
    prefix = pathlib.Path((REPO / "build" / "llama-prefix").read_text().strip())
    port = free_port()
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen([str(prefix / "bin" / "llama-server"), "-m", str(TINY / "model.gguf"),
                               "--mmproj", str(TINY / "mmproj.gguf"), "--parallel", str(parallel),
                               "--port", str(port), "--host", "127.0.0.1", "-t", str(threads)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")

        def run_openai():
            r = subprocess.run([sluice, "caption", str(images), "-o", str(tmp / "openai"),
                                "--engine", "openai", "--endpoint", f"http://127.0.0.1:{port}",
                                "--max-in-flight", str(parallel), *common],
                               capture_output=True, text=True, timeout=1200)
            return images_per_s(r.stdout + r.stderr)

        # Interleaved, best of each: the machine may be shared.
        embedded = openai = 0.0
        for _ in range(runs):
            embedded = max(embedded, run_embedded())
            openai = max(openai, run_openai())
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"embedded engine, --parallel {parallel}, {threads} threads: {embedded:.2f} images/s",
          flush=True)
    print(f"openai engine -> llama-server --parallel {parallel}, {threads} threads: "
          f"{openai:.2f} images/s", flush=True)
    return {"images": n_images,
            "parallel": parallel, "threads": threads, "max_tokens": max_tokens,
            "images_per_s_openai": round(openai, 2), "images_per_s_embedded": round(embedded, 2),
            "openai_vs_embedded": round(openai / embedded, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-http-") as d:
        tmp = pathlib.Path(d)
        (tmp / "nginx").mkdir()
        out = nginx_figures(tmp / "nginx", a.requests, a.in_flight)
        out.update(caption_figures(tmp, a.copies, a.parallel, a.threads, a.max_tokens,
                                   a.runs))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
