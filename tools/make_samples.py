#!/usr/bin/env python3
"""(Re)create samples/ from real photographs that ship inside scikit-image.

    .venv/bin/python tools/make_samples.py [--out samples]

Only files present in the scikit-image wheel's data directory are used (no
pooch download).  Output is deterministic for a given Pillow build (same
libjpeg/zlib/libwebp): every encoder gets explicit settings and no metadata
that carries time or paths.  samples/SOURCES.md is written by this script, so
it always matches the files.

Layout
  samples/<name>.jpg        six photos, longest edge <= 640 px, JPEG q85
  samples/variants/...      sizes, formats and EXIF orientations derived from them
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

try:
    import skimage
    import skimage.data
except ImportError:  # pragma: no cover
    sys.exit("make_samples.py needs scikit-image (pip install -r tools/requirements.txt)")

DATA_DIR = Path(skimage.data.__file__).parent
MAX_EDGE = 640
JPEG_Q = 85

# name -> (file in skimage/data, origin and license as documented in skimage.data.<func>)
PHOTOS = {
    "astronaut": ("astronaut.png", "skimage.data.astronaut()",
                  "Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn). "
                  "No known copyright restrictions, released into the public domain."),
    "chelsea": ("chelsea.png", "skimage.data.chelsea()",
                "Chelsea the cat. CC0 by the photographer (Stefan van der Walt)."),
    "coffee": ("coffee.png", "skimage.data.coffee()",
               "Coffee cup, courtesy of Pikolo Espresso Bar. CC0 by the photographer (Rachel Michetti)."),
    "rocket": ("rocket.jpg", "skimage.data.rocket()",
               "Launch of DSCOVR on Falcon 9 by SpaceX "
               "(https://www.flickr.com/photos/spacexphotos/16511594820/). Released into the public domain by SpaceX."),
    "hubble": ("hubble_deep_field.jpg", "skimage.data.hubble_deep_field()",
               "Hubble eXtreme Deep Field, NASA via HubbleSite "
               "(http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/). Public domain (NASA)."),
    "camera": ("camera.png", "skimage.data.camera()",
               "Man with a camera on a tripod (grayscale). CC0 by the photographer (Lav Varshney)."),
}


def load(fname: str) -> Image.Image:
    im = Image.open(DATA_DIR / fname)
    im.load()
    im.info.clear()   # drop the source's JPEG comment/ICC/EXIF so outputs carry no stray metadata
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return im


def fit(im: Image.Image, edge: int) -> Image.Image:
    """Resize so the longest edge is `edge` (up or down), keeping the aspect ratio."""
    w, h = im.size
    s = edge / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return im.resize(size, Image.Resampling.LANCZOS)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    import numpy as np
    return float(np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16)).mean())


def save_jpeg(im: Image.Image, path: Path, **kw) -> None:
    im.save(path, "JPEG", quality=kw.pop("quality", JPEG_Q), optimize=True, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    args = ap.parse_args(argv)
    out: Path = args.out
    var = out / "variants"
    if var.exists():
        shutil.rmtree(var)
    for old in out.glob("*.jpg"):
        old.unlink()
    var.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, str, str]] = []   # (path, source, derivation)
    base: dict[str, Image.Image] = {}

    for name, (fname, func, _) in PHOTOS.items():
        im = load(fname)
        src_size = "x".join(map(str, im.size))
        if max(im.size) > MAX_EDGE:
            im = fit(im, MAX_EDGE)
        base[name] = im
        p = out / f"{name}.jpg"
        save_jpeg(im, p)
        rows.append((p.relative_to(out).as_posix(), name,
                     f"{fname} ({src_size}, {im.mode}) -> longest edge <= {MAX_EDGE} px "
                     f"(Lanczos), {im.size[0]}x{im.size[1]}, JPEG q{JPEG_Q}"))

    def add(path: Path, source: str, how: str) -> None:
        rows.append((path.relative_to(out).as_posix(), source, how))

    # --- sizes ---
    p = var / "chelsea_thumb48.jpg"
    im = fit(base["chelsea"], 48)
    save_jpeg(im, p)
    add(p, "chelsea", f"tiny thumbnail: longest edge 48 px ({im.size[0]}x{im.size[1]}), JPEG q{JPEG_Q}")

    p = var / "coffee_1600.jpg"
    im = fit(load(PHOTOS["coffee"][0]), 1600)
    save_jpeg(im, p, quality=80)
    add(p, "coffee", f"large: upscaled from the 600x400 original to {im.size[0]}x{im.size[1]} (Lanczos), JPEG q80")

    p = var / "rocket_progressive.jpg"
    im = fit(base["rocket"], 480)
    save_jpeg(im, p, progressive=True)
    add(p, "rocket", f"progressive JPEG, {im.size[0]}x{im.size[1]}, q{JPEG_Q}")

    # --- formats ---
    p = var / "astronaut.png"
    im = fit(base["astronaut"], 256)
    im.save(p, "PNG", optimize=True)
    add(p, "astronaut", f"PNG (RGB, 8 bit), {im.size[0]}x{im.size[1]}")

    p = var / "rocket.webp"
    im = fit(base["rocket"], 400)
    im.save(p, "WEBP", quality=80, method=4)
    add(p, "rocket", f"WebP (lossy q80), {im.size[0]}x{im.size[1]}")

    p = var / "chelsea.gif"
    im = fit(base["chelsea"], 300).quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    im.save(p, "GIF", optimize=False)
    add(p, "chelsea", f"GIF (palette, 128 colours, single frame), {im.size[0]}x{im.size[1]}")

    p = var / "camera_gray.png"
    im = fit(base["camera"], 256).convert("L")
    im.save(p, "PNG", optimize=True)
    add(p, "camera", f"grayscale PNG (mode L, 1 channel), {im.size[0]}x{im.size[1]}")

    p = var / "coffee_rgba.png"
    im = fit(base["coffee"], 300).convert("RGBA")
    w, h = im.size
    alpha = Image.new("L", im.size, 0)
    ImageDraw.Draw(alpha).ellipse((w * 0.08, h * 0.05, w * 0.92, h * 0.95), fill=255)
    im.putalpha(alpha)
    im.save(p, "PNG", optimize=True)
    add(p, "coffee", f"RGBA PNG, {w}x{h}: fully transparent outside a centred ellipse (alpha 0 / 255)")

    # --- orientations: pixels stored rotated, EXIF Orientation says how to display ---
    # Orientation 6 = "rotate 90 deg clockwise to display"; 8 = "rotate 90 deg counter-clockwise".
    for src, tag, store_op in (("chelsea", 6, Image.Transpose.ROTATE_90),     # stored rotated CCW
                               ("rocket", 8, Image.Transpose.ROTATE_270)):    # stored rotated CW
        upright = base[src]
        stored = upright.transpose(store_op)
        exif = Image.Exif()
        exif[0x0112] = tag   # Orientation
        p = var / f"{src}_exif_orient{tag}.jpg"
        save_jpeg(stored, p, exif=exif.tobytes())
        # check: auto-orientation must give back the upright picture's geometry
        with Image.open(p) as chk:
            assert chk.getexif().get(0x0112) == tag
            shown = ImageOps.exif_transpose(chk)
            assert shown.size == upright.size, (shown.size, upright.size)
            diff = mean_abs_diff(shown, upright)
            flipped = mean_abs_diff(shown, upright.transpose(Image.Transpose.ROTATE_180))
            assert diff < 8 and flipped > 3 * diff, (diff, flipped)
        add(p, src, f"EXIF Orientation={tag}; pixels stored {stored.size[0]}x{stored.size[1]} (rotated), "
                    f"displays upright as {upright.size[0]}x{upright.size[1]} only when auto-oriented")

    write_sources(out, rows)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {len(rows)} images + SOURCES.md to {out} ({total / 1e6:.2f} MB)")
    return 0


def write_sources(out: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = [
        "# Sample images",
        "",
        "Generated by `tools/make_samples.py` (do not edit by hand; rerun the script).",
        f"All pictures come from the data directory of the scikit-image wheel "
        f"(version {skimage.__version__} when generated); origins and licences are as documented "
        "in the docstrings of the `skimage.data` functions.",
        "",
        "## Originals",
        "",
        "| name | skimage file | function | origin and licence |",
        "|---|---|---|---|",
    ]
    for name, (fname, func, lic) in PHOTOS.items():
        lines.append(f"| {name} | `skimage/data/{fname}` | `{func}` | {lic} |")
    lines += ["", "## Files", "", "| file | from | derivation | sha256 (first 16) |", "|---|---|---|---|"]
    for path, src, how in rows:
        digest = hashlib.sha256((out / path).read_bytes()).hexdigest()[:16]
        lines.append(f"| `{path}` | {src} | {how} | `{digest}` |")
    lines.append("")
    (out / "SOURCES.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
