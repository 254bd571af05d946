"""What keeping S3 connections saves (make bench-s3; docs/deploy.md "S3").

    .venv/bin/python bench/s3.py [--objects 300] [--threads 4] [--bytes 4096]
                                 [--rounds 3] [--connect-delay-ms 0,3]

Starts moto's server, puts OBJECTS small objects in a bucket, then runs
build/bench/s3 (bench/s3.c) in both modes, alternated, ROUNDS times each:
`fresh` opens a new connection for every request (sluice before), `reuse`
keeps one per thread (now). THREADS threads GET every object, then PUT as
many. Requests go through tests/e2e/s3_store.py, a keep-alive proxy that
counts the connections it accepts (moto itself closes each one); with
--connect-delay-ms D it also holds every new connection D ms before its
first answer, standing in for a TCP + TLS handshake over a network (on
loopback a handshake costs ~0.1 ms; to S3 over TLS 1.2 it is 2-3 round
trips). Figures: medians of the rounds; the last line is JSON."""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from s3_store import CountingProxy, moto_store  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--bytes", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connect-delay-ms", default="0,3")
    ap.add_argument("--bin", default=str(REPO / os.environ.get("BUILD", "build") / "bench" / "s3"))
    args = ap.parse_args()
    with moto_store() as (env, client):
        client.create_bucket(Bucket="bench")
        body = os.urandom(args.bytes)
        for i in range(args.objects):
            client.put_object(Bucket="bench", Key=f"small/{i:05d}.bin", Body=body)
        results = {}
        for delay in [float(d) for d in args.connect_delay_ms.split(",")]:
            proxy = CountingProxy(env["AWS_ENDPOINT_URL"], connect_delay_s=delay / 1000,
                                  log=False)
            penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
            runs = {"fresh": [], "reuse": []}
            for _ in range(args.rounds):
                for mode in ("fresh", "reuse"):
                    accepted = proxy.connections
                    out = subprocess.run([args.bin, "s3://bench/small", str(args.objects),
                                          str(args.threads), str(args.bytes), mode], env=penv,
                                         check=True, capture_output=True, text=True).stdout
                    run = json.loads(out.strip().splitlines()[-1])
                    run["server_accepted"] = proxy.connections - accepted
                    runs[mode].append(run)
            proxy.close()
            fig = {}
            for mode, rs in runs.items():
                fig[mode] = {
                    "get_per_s": round(statistics.median(r["get_per_s"] for r in rs), 1),
                    "put_per_s": round(statistics.median(r["put_per_s"] for r in rs), 1),
                    "requests": rs[0]["get_requests"] + rs[0]["put_requests"],
                    "connections": rs[0]["get_connections"] + rs[0]["put_connections"],
                    "server_accepted": rs[0]["server_accepted"],
                }
            fig["get_ratio"] = round(fig["reuse"]["get_per_s"] / fig["fresh"]["get_per_s"], 3)
            fig["put_ratio"] = round(fig["reuse"]["put_per_s"] / fig["fresh"]["put_per_s"], 3)
            results[f"connect_delay_ms={delay:g}"] = fig
            for mode in ("fresh", "reuse"):
                f = fig[mode]
                print(f"delay {delay:g} ms  {mode:5s}: GET {f['get_per_s']:8.1f}/s  "
                      f"PUT {f['put_per_s']:8.1f}/s  {f['requests']} requests over "
                      f"{f['connections']} connections (server accepted "
                      f"{f['server_accepted']})")
            print(f"delay {delay:g} ms  reuse/fresh: GET x{fig['get_ratio']}  "
                  f"PUT x{fig['put_ratio']}")
        print(json.dumps({"objects": args.objects, "threads": args.threads,
                          "bytes": args.bytes, "rounds": args.rounds, **results}))


if __name__ == "__main__":
    main()
