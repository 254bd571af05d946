"""Decode + resize to 512 px, images/s on one core: sluice (bench/decode.c,
built as build/bench/decode, calling sl_image_decode) against Pillow on the
same JPEG files.

    .venv/bin/python bench/decode.py [--runs 5] [--seconds 2] [--bin build/bench/decode]

Inputs, made from the colour photos in samples/ (real photo content):
- small: each photo centre-cropped to 4:3 and resized to 500x375 (the typical
  ImageNet size), JPEG quality 90;
- large: each photo resized to 4000x3000 (12 megapixels) with light Gaussian
  noise (sigma 4) so the JPEG carries sensor-like detail instead of the smooth
  gradients of an upscale, quality 90 (about 2-3 MB each).

Both sides read every file into memory first and then decode round-robin on
one thread for --seconds; a run's figure is images / seconds. Rates quoted
are medians of --runs runs; ratios are medians of the per-run ratios (sluice
and Pillow run back to back in each run, so load from other processes
mostly cancels).
- sluice: sl_image_decode with max_edge 512 (shrink-on-load), EXIF
  orientation, 8-bit sRGB RGB out; VIPS_CONCURRENCY=1 (sluice's default
  anyway, pinned here against the caller's environment) so libvips adds no
  threads of its own.
- Pillow: the typical user code, Image.open(BytesIO(b)).convert("RGB") then
  thumbnail((512, 512)) (convert loads the full image, so thumbnail's draft
  shortcut does not apply). Also reported: the tuned path, Image.open, then
  thumbnail((512, 512)) before convert (which lets Pillow use JPEG DCT scaling
  via draft), as pillow_draft_*; the ratios use the typical path.
The last line is JSON."""
import argparse
import io
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut", "chelsea", "coffee", "hubble", "rocket"]


def make_inputs(out: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    rng = np.random.default_rng(0)
    sets: dict[str, list[pathlib.Path]] = {"small": [], "large": []}
    for name in PHOTOS:
        im = Image.open(REPO / "samples" / f"{name}.jpg").convert("RGB")
        w, h = im.size
        cw, ch = (w, w * 3 // 4) if w * 3 // 4 <= h else (h * 4 // 3, h)
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
        small = im.crop(box).resize((500, 375), Image.LANCZOS)
        path = out / f"{name}_500x375.jpg"
        small.save(path, quality=90)
        sets["small"].append(path)
        big = np.asarray(im.crop(box).resize((4000, 3000), Image.BICUBIC), dtype=np.float32)
        big += rng.normal(0, 4, big.shape).astype(np.float32)
        path = out / f"{name}_4000x3000.jpg"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=90)
        sets["large"].append(path)
    return sets


def pillow_rate(blobs: list[bytes], seconds: float, draft: bool) -> float:
    def one(b: bytes):
        if draft:
            im = Image.open(io.BytesIO(b))
            im.thumbnail((512, 512))
            im = im.convert("RGB")
        else:
            im = Image.open(io.BytesIO(b)).convert("RGB")
            im.thumbnail((512, 512))
        return im.size

    for b in blobs:
        one(b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        one(blobs[n % len(blobs)])
        n += 1
    return n / (time.perf_counter() - t0)


def sluice_rate(binary: str, files: list[pathlib.Path], seconds: float) -> float:
    env = dict(os.environ, VIPS_CONCURRENCY="1")
    out = subprocess.run([binary, "512", str(seconds), *map(str, files)], check=True,
                         capture_output=True, text=True, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert max(res["width"], res["height"]) <= 512, res
    return res["images_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "bench" / "decode"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        sets = make_inputs(pathlib.Path(tmp))
        res: dict[str, object] = {"runs": args.runs, "seconds_per_run": args.seconds}
        for size, files in sets.items():
            blobs = [f.read_bytes() for f in files]
            s, p, d = [], [], []
            # Interleaved so that load from other processes hits both sides alike.
            for _ in range(args.runs):
                s.append(sluice_rate(args.bin, files, args.seconds))
                p.append(pillow_rate(blobs, args.seconds, draft=False))
                d.append(pillow_rate(blobs, args.seconds, draft=True))
            sm, pm, dm = statistics.median(s), statistics.median(p), statistics.median(d)
            print(f"{size}: {len(files)} files, sluice {sm:.1f} images/s, Pillow {pm:.1f}, "
                  f"Pillow+draft {dm:.1f} (runs: sluice {[round(x, 1) for x in s]}, "
                  f"Pillow {[round(x, 1) for x in p]})", flush=True)
            res[f"sluice_images_per_s_{size}"] = round(sm, 1)
            res[f"pillow_images_per_s_{size}"] = round(pm, 1)
            res[f"pillow_draft_images_per_s_{size}"] = round(dm, 1)
            # Each run's sluice and Pillow figures were taken seconds apart:
            # the median of their ratios cancels load from other processes
            # better than a ratio of medians.
            res[f"sluice_vs_pillow_{size}"] = round(
                statistics.median(a / b for a, b in zip(s, p)), 2)
            res[f"sluice_vs_pillow_draft_{size}"] = round(
                statistics.median(a / b for a, b in zip(s, d)), 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
