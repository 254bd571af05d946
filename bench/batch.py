"""bench/batch.py — `sluice batch` against llama-server on text-only
requests (make bench-batch; issue 15). Not a test.

The same N requests (a ~64-token prompt each, 64 tokens out, greedy) on the
SmolVLM-256M shape's text model (random weights; models/smolvlm-256m-e512-bf16,
made by make bench-engine's rule):

  sluice:        sluice batch REQUESTS.jsonl --parallel P (the run's own
                 seconds from _summary.json: model load not counted)
  llama-server:  llama-server --parallel P, driven by an asyncio client with
                 P keep-alive connections sending the same bodies (first
                 request sent to last answer: load not counted)

Both on the same threads. llama-server gets "ignore_eos": true so each
answer is max_tokens long; sluice's llama engine has no such switch, so the
tokens each side generated are counted and printed (with random weights an
end-of-generation token is rare). Both poll as llama.cpp does by default
(sluice --cpu-poll 50, llama-server --poll 50). Rounds alternate the two
(default 3) and the median run of each is compared. Prints human lines,
then one JSON object as the last line with sluice_vs_llama_server (the
ratio of the median requests/s).

    .venv/bin/python bench/batch.py [--requests N] [--rounds R] [--parallel P] [--threads T]
"""
import argparse
import asyncio
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
MODEL_DIR = REPO / "models" / "smolvlm-256m-e512-bf16"
WORDS = ("river stone apple cloud violet engine paper garden window silver morning "
         "harbor candle forest quiet yellow bridge mountain orange letter winter "
         "market pencil island rocket summer lantern meadow copper thunder").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bodies(n, tokens, seed=7):
    """Distinct prompts of about 64 tokens (no shared prefix to reuse)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(52))
        out.append({"messages": [{"role": "user", "content": f"{i}: {words}"}],
                    "max_tokens": tokens, "temperature": 0})
    return out


def run_sluice(tmp, reqs, parallel, threads):
    path = tmp / "requests.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                        "url": "/v1/chat/completions", "body": b}) + "\n"
                            for i, b in enumerate(reqs)))
    out = tmp / "sluice-out"
    cmd = [str(BUILD / "sluice"), "batch", str(path), "-o", str(out), "--overwrite",
           "--model", str(MODEL_DIR / "model.gguf"), "--mmproj", str(MODEL_DIR / "mmproj.gguf"),
           "--parallel", str(parallel), "--threads", str(threads), "--metrics-addr", "off",
           "-q", "--cpu-poll", "50"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"sluice failed ({res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    seconds = summary["seconds"]["run"]
    generated = summary["tokens"]["generated"]
    prompt = summary["tokens"]["prompt"]
    ok = summary["rows"]["ok"]
    return {"seconds": seconds, "requests": ok, "generated": generated, "prompt": prompt}


async def post(reader, writer, port, body):
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (port, len(data)) + data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    answer = json.loads(await reader.readexactly(length))
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"llama-server: {head[:80]!r} {answer}")
    return answer


async def drive(port, reqs, parallel):
    queue = list(reversed(reqs))
    usage = {"generated": 0, "prompt": 0, "requests": 0}

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            body = dict(queue.pop(), ignore_eos=True)
            a = await post(reader, writer, port, body)
            usage["generated"] += a["usage"]["completion_tokens"]
            usage["prompt"] += a["usage"]["prompt_tokens"]
            usage["requests"] += 1
        writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    usage["seconds"] = time.monotonic() - t0
    return usage


def run_server(tmp, reqs, parallel, threads, prefix):
    port = free_port()
    # A context of (prompt + answer + room) per slot, as sluice sizes its own.
    ctx = parallel * 192
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([str(prefix / "bin" / "llama-server"), "-m",
                             str(MODEL_DIR / "model.gguf"), "--parallel", str(parallel),
                             "-c", str(ctx), "-t", str(threads), "--port", str(port),
                             "--host", "127.0.0.1", "--no-webui", "--poll", "50"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("llama-server did not start: " +
                         (tmp / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        return asyncio.run(drive(port, reqs, parallel))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not (MODEL_DIR / "model.gguf").exists():
        sys.exit(f"{MODEL_DIR} missing: make bench-batch makes it")
    prefix = pathlib.Path((BUILD / "llama-prefix").read_text().strip())
    reqs = bodies(args.requests, args.tokens)
    # Alternated rounds, medians: the machine is shared and noisy.
    runs = {"sluice": [], "llama_server": []}
    for k in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as t:
            tmp = pathlib.Path(t)
            runs["llama_server"].append(run_server(tmp, reqs, args.parallel, args.threads,
                                                   prefix))
            runs["sluice"].append(run_sluice(tmp, reqs, args.parallel, args.threads))
        print(f"round {k + 1}: " + ", ".join(
            f"{n} {r[-1]['requests'] / r[-1]['seconds']:.2f} requests/s"
            for n, r in runs.items()), flush=True)

    def median_run(rs):
        return sorted(rs, key=lambda r: r["requests"] / r["seconds"])[len(rs) // 2]
    sl, server = median_run(runs["sluice"]), median_run(runs["llama_server"])
    result = {"requests": args.requests, "max_tokens": args.tokens, "parallel": args.parallel,
              "threads": args.threads, "rounds": args.rounds}
    for name, r in (("sluice", sl), ("llama_server", server)):
        rps = r["requests"] / r["seconds"]
        tps = r["generated"] / r["seconds"]
        print(f"{name:13s} {r['requests']} requests in {r['seconds']:.2f} s: {rps:.2f} requests/s, "
              f"{tps:.1f} generated tok/s ({r['generated']} generated, {r['prompt']} prompt tokens)")
        result.update({f"{name}_requests_per_s": round(rps, 3),
                       f"{name}_generated_tokens_per_s": round(tps, 1),
                       f"{name}_generated_tokens": r["generated"],
                       f"{name}_prompt_tokens": r["prompt"]})
    result["sluice_vs_llama_server"] = round(result["sluice_requests_per_s"] /
                                             result["llama_server_requests_per_s"], 3)
    result["sluice_vs_llama_server_tokens"] = round(
        result["sluice_generated_tokens_per_s"] / result["llama_server_generated_tokens_per_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
