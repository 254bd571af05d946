"""What sampling a video over HTTP reads (make bench-video-remote; docs/inputs.md
"Videos").

    .venv/bin/python bench/video_remote.py [--frames 8] [--seconds 10,60]

Makes 640x360 H.264 clips with the ffmpeg CLI (testsrc2, moving content, 30
fps, x264's default preset; a keyframe every second, -g 30, as phones and
cameras write), of each length in --seconds. Serves them from a local
server that answers Range requests (tests/e2e/localserver.py RangeHandler,
which logs every GET and the body bytes it wrote) and captions a manifest
of their URLs with `sluice caption --engine openai` against a fake chat
server (tests/e2e/openai_helpers.py: no model, so the run is the decode
stage's reads), --video-frames FRAMES, one decode worker. Figures per clip,
from the server's log: the file's size, the bytes sent and the GETs; and
the same for the whole-file fetch sluice did before (one GET of the file).
The last line is JSON."""
import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from localserver import LocalServer, RangeHandler  # noqa: E402
from openai_helpers import FakeServer, completion  # noqa: E402


def make_clip(path, seconds):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=s=640x360:r=30:d={seconds}", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-g", "30", str(path)], check=True, timeout=600)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seconds", default="10,60")
    args = ap.parse_args()
    build = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
    lengths = [int(s) for s in args.seconds.split(",")]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        www = tmp / "www"
        www.mkdir()
        for s in lengths:
            make_clip(www / f"clip{s}s.mp4", s)
        RangeHandler.log = []
        with LocalServer(functools.partial(RangeHandler, directory=str(www))) as files, \
                FakeServer(lambda h, n, body: completion(h, "ok")) as chat:
            manifest = tmp / "m.jsonl"
            manifest.write_text("".join(json.dumps({"url": f"{files.url}/clip{s}s.mp4"}) + "\n"
                                        for s in lengths))
            r = subprocess.run([str(build / "sluice"), "caption", str(manifest), "-o",
                                str(tmp / "out"), "--engine", "openai", "--endpoint", chat.url,
                                "--video-frames", str(args.frames), "--video-fps", "0",
                                "--decode-workers", "1", "--show", "0", "--metrics-addr", "off"],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                sys.exit(f"sluice failed: {r.stderr[-2000:]}")
        for s in lengths:
            name = f"clip{s}s.mp4"
            gets = [e for e in RangeHandler.log if e[0] == "/" + name]
            size = (www / name).stat().st_size
            sent = sum(n for *_, n in gets)
            figures[name] = {"seconds": s, "file_bytes": size, "bytes_read": sent,
                             "gets": len(gets), "read_share": round(sent / size, 3),
                             "before_bytes": size, "before_gets": 1}
            print(f"{name}: {size} bytes; {args.frames} frames read {sent} bytes "
                  f"({100 * sent / size:.1f}%) in {len(gets)} GETs (before: {size} in 1)")
    print(json.dumps({"frames": args.frames, "clips": figures}))


if __name__ == "__main__":
    main()
