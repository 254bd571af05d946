"""Awkward and hostile images through `sluice caption` (docs/images.md):
each is a documented error row or the right output, the run finishes with
exit 3, and a decompression bomb is refused from its header without the
memory its pixels would take."""
import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, TINY, read_rows, sanitized

BOMB_SIDE = 30000


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """A real side x side 8-bit grey PNG of zeros: side^2 bytes decoded, a
    few MB on disk (zlib level 1 keeps the test quick)."""
    z = zlib.compressobj(1)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + \
        png_chunk(b"IEND", b"")


def rgb16_png(width: int, height: int) -> bytes:
    """16-bit RGB, red left half, blue right (Pillow cannot write it)."""
    px = np.zeros((height, width, 3), dtype=">u2")
    px[:, : width // 2, 0] = 65535
    px[:, width // 2:, 2] = 65535
    raw = b"".join(b"\0" + px[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + \
        png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# name -> (expected error text, or the (width, height) of a good row)
CASES = {
    "bomb.png": ("30000x30000 pixels exceeds the limit of 100000000",),
    "truncated.jpg": ("truncated",),
    "zero-bytes.jpg": ("empty file",),
    "png-named.jpg": (64, 48),
    "cmyk.jpg": (80, 60),
    "rgb16.png": (40, 30),
    "animated.gif": (64, 48),  # the first frame, not a 64x144 strip
    "good.jpg": None,  # a sample photo: its size, shrunk to 512
    "transparent.png": (300, 200),
}
NON_UTF8_NAME = b"caf\xe9-latin1.jpg"


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("bad") / "in"
    root.mkdir()
    (root / "bomb.png").write_bytes(bomb_png(BOMB_SIDE))
    photo = (SAMPLES / "rocket.jpg").read_bytes()
    (root / "good.jpg").write_bytes(photo)
    (root / "truncated.jpg").write_bytes(photo[: len(photo) // 3])
    (root / "zero-bytes.jpg").write_bytes(b"")
    (root / "png-named.jpg").write_bytes(encode(Image.new("RGB", (64, 48), (0, 128, 0)), "PNG"))
    (root / "cmyk.jpg").write_bytes(encode(Image.new("CMYK", (80, 60), (0, 255, 255, 0)), "JPEG"))
    (root / "rgb16.png").write_bytes(rgb16_png(40, 30))
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (root / "animated.gif").write_bytes(gif.getvalue())
    (root / "transparent.png").write_bytes(
        encode(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), "PNG"))
    # A Latin-1 name: not valid UTF-8, so the JSONL id cannot carry it as is.
    with open(os.path.join(os.fsencode(root), NON_UTF8_NAME), "wb") as f:
        f.write(photo)
    return root


def caption_measured(sluice, input_dir, out_dir, *extra):
    """Runs sluice caption in a child Python that reports the peak RSS (KiB)
    of that one sluice process (RUSAGE_CHILDREN of a fresh parent)."""
    args = [str(sluice.binary), "caption", str(input_dir), "-o", str(out_dir),
            "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"), *extra]
    probe = ("import resource, subprocess, sys, json\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True,\n"
             "                   errors='replace')\n"
             "print(json.dumps({'rc': r.returncode, 'stdout': r.stdout, 'stderr': r.stderr,\n"
             "  'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                         timeout=900, check=True).stdout
    return json.loads(out)


def test_bad_images_are_error_rows_or_right_output(sluice, bad_set, tmp_path):
    out = tmp_path / "out"
    r = caption_measured(sluice, bad_set, out, "--max-tokens", "4", "--ordered",
                         "--decode-workers", "2", "--background", "102030")
    assert r["rc"] == 3, r["stderr"]  # finished; some rows failed
    rows = [json.loads(line) for line in (out / "part-00000.jsonl").read_text("utf-8").splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert len(rows) == len(CASES) + 1, sorted(by_id)
    good = Image.open(SAMPLES / "rocket.jpg").size
    scale = 512 / max(good)
    for name, expect in CASES.items():
        row = by_id[name]
        if expect is None:
            expect = (round(good[0] * scale), round(good[1] * scale)) if scale < 1 else good
        if isinstance(expect[0], str):
            assert row["caption"] is None, row
            assert row["error_stage"] == "decode", row
            assert name in row["error"] and expect[0] in row["error"], row["error"]
        else:
            assert row["error"] is None, (name, row["error"])
            assert isinstance(row["caption"], str)
            assert (row["width"], row["height"]) == expect, (name, row)
    # The Latin-1 name is a row too, decoded fine; its id is the name made
    # valid UTF-8 (the undecodable byte as U+FFFD and its hex digits), so it
    # is still found.
    others = [row for i, row in by_id.items() if i not in CASES]
    assert len(others) == 1 and others[0]["error"] is None, others
    assert others[0]["id"] == "caf\ufffdE9-latin1.jpg", others[0]["id"]
    # Failures by class: the bomb passed a size limit, the others are corrupt.
    by_class = {}
    for line in (out / "_metrics.prom").read_text().splitlines():
        if line.startswith("sluice_rows_failed_by_class_total{"):
            by_class[line.split('class="')[1].split('"')[0]] = float(line.split()[-1])
    assert by_class == {"too_large": 1, "decode": 2}, by_class
    # The bomb would be 900 MB of pixels (a decode into RGB, 2.7 GB); the
    # whole run stays far below that.
    limit_mb = 600 if sanitized() else 400
    assert r["maxrss_kb"] < limit_mb * 1024, f"peak RSS {r['maxrss_kb'] // 1024} MB"


def test_unreadable_formats_and_strips_say_what_is_wrong_in_plain_words(sluice, tmp_path):
    """A file libvips knows but sluice does not read said "libvips loader
    VipsForeignLoadMagickBuffer is blocked", and a 10000x1 strip, shrunk to
    512x1, failed in the engine with "the vision preprocessor rejected the
    image". Now the row says what is wrong with the input: the format in
    words, or the size and the aspect ratio (from the header, in the decode
    stage)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "tga.jpg").write_bytes(encode(Image.new("RGB", (64, 48), (1, 2, 3)), "TGA"))
    (root / "svg.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" '
                                  'height="10"><rect width="10" height="10"/></svg>')
    (root / "text.jpg").write_text("hello, not an image\n" * 10)
    (root / "wide.png").write_bytes(encode(Image.new("RGB", (10000, 1), (1, 2, 3)), "PNG"))
    (root / "tall.png").write_bytes(encode(Image.new("RGB", (1, 10000), (1, 2, 3)), "PNG"))
    (root / "ok.png").write_bytes(encode(Image.new("RGB", (400, 2), (1, 2, 3)), "PNG"))
    noise = encode(Image.effect_noise((300, 200), 50).convert("RGB"), "PNG")
    (root / "cut.png").write_bytes(noise[: len(noise) // 2])
    # libvips' loader said what it made of this on stderr, "(process:N):
    # VIPS-WARNING **: ...: chunk data is too large", four lines of it,
    # --quiet or not, naming no file.
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    # An AVIF of its ftyp box alone: the format is known, its file is broken
    # (it said "not an image sluice can read").
    (root / "cut.avif").write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf")
    out = tmp_path / "out"
    r = sluice.run("caption", root, "-o", out, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "--max-tokens", "2", "--metrics-addr", "off", "--quiet")
    assert r.returncode == 3, r.stderr[-3000:]
    assert "VIPS-WARNING" not in r.stderr, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out)}
    for name in ("tga.jpg", "svg.png", "text.jpg", "wide.png", "tall.png", "cut.png", "cut.avif",
                 "garbage.png"):
        err = rows[name]["error"]
        assert rows[name]["error_stage"] == "decode" and err.startswith(str(root / name)), err
        assert "VipsForeign" not in err, err
    not_read = "not an image sluice can read"
    assert not_read in rows["tga.jpg"]["error"]  # ImageMagick's, or not recognised without it
    assert f"{not_read} (SVG)" in rows["svg.png"]["error"]
    assert f"{not_read} (format not recognised" in rows["text.jpg"]["error"]
    assert "10000x1 px: aspect ratio over 200:1, too wide" in rows["wide.png"]["error"]
    assert "1x10000 px: aspect ratio over 200:1, too tall" in rows["tall.png"]["error"]
    assert "damaged or cut short" in rows["cut.png"]["error"]  # libvips' detail after it
    assert "damaged or cut short (its PNG header cannot be read)" in rows["garbage.png"]["error"]
    assert "damaged or cut short (its HEIF header cannot be read)" in rows["cut.avif"]["error"]
    assert rows["ok.png"]["error_stage"] != "decode", rows["ok.png"]  # 200:1 is read


def test_an_image_named_as_a_video_is_read_as_the_image_it_is(sluice, tmp_path):
    """A JPEG saved as .mp4 or a PNG as .mov (scrapers name files by URL)
    failed "not a video in a supported container": the name beat the bytes.
    Now an image's magic wins, as it does for a PNG named .jpg; bytes that
    are neither stay a video's failure."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "photo.mp4").write_bytes((SAMPLES / "camera.jpg").read_bytes())
    (root / "drawing.mov").write_bytes(encode(Image.new("RGB", (64, 48), (9, 8, 7)), "PNG"))
    (root / "junk.mp4").write_text("not a video, not an image\n" * 20)
    out = tmp_path / "out"
    r = sluice.run("caption", root, "-o", out, "--dry-run", "--quiet")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out)}
    assert rows["photo.mp4"]["error"] is None and rows["photo.mp4"]["format"] == "jpeg", rows["photo.mp4"]
    assert rows["drawing.mov"]["error"] is None and rows["drawing.mov"]["format"] == "png"
    assert (rows["drawing.mov"]["width"], rows["drawing.mov"]["height"]) == (64, 48)
    assert "not a video in a supported container" in rows["junk.mp4"]["error"], rows["junk.mp4"]


def test_max_aspect_ratio_is_a_flag_and_not_in_the_fingerprint(sluice, tmp_path):
    """The 200:1 limit had no flag: --max-aspect-ratio N (image.max_aspect_ratio;
    0: none) sets it. It changes no answer of a row that passes, so it is
    not in resume's fingerprint: the same output resumes with another limit,
    and --retry-failed reads the rows the old limit refused."""
    root = tmp_path / "in"
    root.mkdir()
    for name, size in (("wide.png", (1000, 4)), ("mid.png", (120, 2)), ("ok.png", (80, 2))):
        (root / name).write_bytes(encode(Image.new("RGB", size, (1, 2, 3)), "PNG"))
    out = tmp_path / "out"
    common = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf", "--max-tokens",
              "2", "--metrics-addr", "off", "--quiet")
    r = sluice.run("caption", root, "-o", out, *common, "--max-aspect-ratio", "50")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out)}
    assert "1000x4 px: aspect ratio over 50:1, too wide" in rows["wide.png"]["error"]
    assert "120x2 px: aspect ratio over 50:1, too wide" in rows["mid.png"]["error"]
    assert rows["ok.png"]["error_stage"] != "decode", rows["ok.png"]  # 40:1 is read
    # Another limit, the same job: it resumes, and the refused rows are read now.
    r = sluice.run("caption", root, "-o", out, *common, "--max-aspect-ratio", "0",
                   "--retry-failed")
    assert r.returncode in (0, 3), r.stderr[-3000:]
    rows = {row["id"]: row for part in sorted(out.glob("part-*.jsonl"))
            for row in map(json.loads, part.read_text().splitlines())}
    assert sorted(rows) == ["mid.png", "ok.png", "wide.png"]
    for name in ("wide.png", "mid.png"):
        assert rows[name]["error_stage"] != "decode", rows[name]
        assert "aspect ratio" not in (rows[name]["error"] or ""), rows[name]
    r = sluice.run("caption", root, "-o", tmp_path / "bad", *common, "--max-aspect-ratio", "-1")
    assert r.returncode == 2 and "--max-aspect-ratio" in r.stderr, r.stderr


def interlaced_png(side: int) -> bytes:
    """A side x side 16-bit RGBA PNG, Adam7-interlaced, of one colour: a
    few hundred KB on disk; libvips reads an interlaced PNG to memory whole
    (side^2 x 8 bytes) to decode it."""
    z = zlib.compressobj(1)
    idat = []
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                           (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        w, h = (side - x0 + dx - 1) // dx, (side - y0 + dy - 1) // dy
        row = b"\0" + b"\x80\x00\x20\x00\x40\x00\xff\xff" * w
        idat += [z.compress(row) for _ in range(h)]
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(idat)) + \
        png_chunk(b"IEND", b"")


def rgba_png(side: int) -> bytes:
    """A side x side 8-bit RGBA PNG, not interlaced, of one colour: about
    0.4 MB on disk at 9999; its rows stream from the file, but libvips
    shrinks it premultiplied, in float."""
    z = zlib.compressobj(1)
    row = b"\0" + b"\x80\x20\x40\x90" * side
    idat = b"".join([z.compress(row) for _ in range(side)] + [z.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + \
        png_chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", ["interlaced.png", "progressive.jpg", "cmyk-progressive.jpg",
                                  "big.gif", "small-screen.gif", "big.avif", "rgba.png"])
def test_images_decoded_whole_do_not_take_a_worker_each_of_memory(sluice, tmp_path, kind):
    """An interlaced PNG, a progressive JPEG (YCbCr through libjpeg, CMYK
    through libvips), a GIF or an AVIF cannot be streamed: its decoder
    holds it whole (the PNG's pixels, the JPEG's DCT coefficients, the
    GIF's canvas, libheif's picture), here about 200-290 MB for a file of
    1 KB-1 MB, outside the pipeline's budget; a plain RGBA PNG's shrink
    holds a share of it in float, as much. Four decode workers held four
    at once (runs of 0.8-1.1 GB); such decodes now share 256 MiB, one
    larger decoding alone, so the run stays near one image's worth
    whatever the timing."""
    root = tmp_path / "in"
    root.mkdir()
    if kind == "interlaced.png":
        data = interlaced_png(5000)  # 5000 x 5000 x 8 bytes
    elif kind == "progressive.jpg":  # 8000 x 8000 at 4:2:0: 1.5 coefficients of 2 bytes a pixel
        data = encode(Image.new("RGB", (8000, 8000), (120, 30, 40)), "JPEG", progressive=True)
    elif kind == "cmyk-progressive.jpg":  # libvips' path: 6000 x 6000 x 4 coefficients of 2 bytes
        data = encode(Image.new("CMYK", (6000, 6000), (0, 90, 80, 40)), "JPEG", progressive=True)
    elif kind == "big.gif":  # libnsgif's canvas: 7000 x 7000 x 4 bytes
        data = encode(Image.new("P", (7000, 7000), 3), "GIF")
    elif kind == "small-screen.gif":
        # The same frame under a logical screen of 1x1: libnsgif grows the
        # canvas to the frame, so a gate that read the screen let all four
        # decode at once (0.72 GB at 6000 x 6000; found by helper fz12)
        data = bytearray(encode(Image.new("P", (7000, 7000), 3), "GIF"))
        data[6:10] = b"\x01\x00\x01\x00"
    elif kind == "rgba.png":
        # Read row by row, yet premultiplied to float for the shrink, whose
        # line caches held about 190 MB of it: four workers took a run to
        # 0.81 GB (found by helper size16)
        data = rgba_png(9999)
    else:  # 6000 x 6000: libheif's planes and RGB, about 7 bytes a pixel
        from PIL import features
        if not features.check("avif"):
            pytest.skip("this Pillow writes no AVIF")
        data = encode(Image.new("RGB", (6000, 6000), (200, 0, 0)), "AVIF", speed=10)
    for name in "abcd":
        (root / f"{name}-{kind}").write_bytes(data)
    out = tmp_path / "out"
    r = caption_measured(sluice, root, out, "--dry-run", "--decode-workers", "4")
    assert r["rc"] == 0, r["stderr"]
    rows = read_rows(out)
    assert len(rows) == 4 and all((row["width"], row["height"]) == (512, 512) for row in rows), rows
    # One image held (about 200 MB) and the run's own: 240-420 MB measured
    # (570-630 under ASan, whose quarantine keeps freed blocks a while);
    # four at once were 0.8-1.1 GB, and three would pass 660 MB.
    limit_mb = 900 if sanitized() else 600
    assert r["maxrss_kb"] < limit_mb * 1024, f"peak RSS {r['maxrss_kb'] // 1024} MB"


def test_background_flag_is_checked(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "out", "--background", "red")
    assert r.returncode == 2
    assert "--background" in r.stderr and "RRGGBB" in r.stderr


def test_local_file_over_max_item_bytes_fails_before_it_is_read(sluice, tmp_path):
    """A local image larger than --max-item-bytes fails its row from its size
    (fstat) alone: a sparse 1 GiB file costs no memory and no time, and the
    good image beside it is captioned."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "good.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    big = root / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk blocks
    out = tmp_path / "out"
    r = caption_measured(sluice, root, out, "--max-tokens", "4", "--max-item-bytes", "1M")
    assert r["rc"] == 3, r["stderr"]
    by_id = {row["id"]: row for row in read_rows(out)}
    assert by_id["good.jpg"]["error"] is None and by_id["good.jpg"]["caption"], by_id
    err = by_id["huge.jpg"]["error"]
    assert str(big) in err and "1073741824 bytes" in err and "1048576" in err \
        and "--max-item-bytes" in err, err
    assert by_id["huge.jpg"]["error_stage"] == "decode"
    # Read whole, the file alone would be 1 GiB resident.
    limit_mb = 600 if sanitized() else 400
    assert r["maxrss_kb"] < limit_mb * 1024, f"peak RSS {r['maxrss_kb'] // 1024} MB"


def test_fifo_in_the_input_folder_fails_its_row_and_never_blocks(sluice, tmp_path):
    """A FIFO with an image name (nothing ever writes to it) is no image:
    opening it for reading would wait for a writer forever, with no way to
    stop the worker. Its row fails at once saying what it is; the good image
    is captioned."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "good.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    os.mkfifo(root / "pipe.jpg")
    os.mkfifo(root / "pipe.mp4")  # the video path opens its file on its own
    out = tmp_path / "out"
    r = sluice.caption(root, out, "--max-tokens", "4", timeout=60)
    assert r.returncode == 3, r.stderr
    by_id = {row["id"]: row for row in read_rows(out)}
    assert by_id["good.jpg"]["error"] is None and by_id["good.jpg"]["caption"], by_id
    for name in ("pipe.jpg", "pipe.mp4"):
        err = by_id[name]["error"]
        assert "not a regular file" in err and str(root / name) in err, (name, err)


@pytest.mark.parametrize("signals", [2, 3])
def test_a_worker_stuck_in_a_read_does_not_hold_a_stopped_run(sluice, tmp_path, signals):
    """A read that never returns (a hung network mount; here the test fault
    point "read" sleeping 10 minutes) keeps its worker from ever joining.
    The second SIGINT still ends the process, within 10 s, saying why; a
    third ends it at once."""
    import signal
    import time
    root = tmp_path / "in"
    root.mkdir()
    (root / "good.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    log = tmp_path / "stderr.txt"
    env = dict(os.environ, SLUICE_TEST_FAULTS="read=sleep:600000")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(sluice.binary), "caption", str(root), "-o", str(tmp_path / "out"), "--model",
             str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
             "--max-tokens", "4", "--metrics-addr", "off"],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            deadline = time.monotonic() + 120
            while "sleeping 600000 ms" not in log.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            t0 = time.monotonic()
            for _ in range(signals):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.3)
            rc = proc.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 130, text
    assert "a worker is stuck" in text and "exiting without it" in text, text
    assert took < (15 if signals == 2 else 5), took


def test_mac_metadata_is_skipped_jfif_is_read_and_a_symlinked_folder_is_said(sluice, tmp_path):
    """A folder copied from a Mac: the AppleDouble "._x.jpg" files and the
    __MACOSX folder are no inputs (they were failed rows); a .jfif is a
    JPEG; a symlinked folder is not walked, and a warning says so, once."""
    root = tmp_path / "in"
    (root / "__MACOSX").mkdir(parents=True)
    photo = (SAMPLES / "rocket.jpg").read_bytes()
    (root / "good.jpg").write_bytes(photo)
    (root / "._good.jpg").write_bytes(b"\0\5\26\7" + b"\0" * 80)  # an AppleDouble header
    (root / "__MACOSX" / "._good.jpg").write_bytes(b"\0\5\26\7" + b"\0" * 80)
    (root / "photo.jfif").write_bytes(photo)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "more.jpg").write_bytes(photo)
    os.symlink(tmp_path / "elsewhere", root / "linked")
    out = tmp_path / "out"
    r = sluice.caption(root, out, "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    by_id = {row["id"]: row for row in read_rows(out)}
    assert set(by_id) == {"good.jpg", "photo.jfif"}, sorted(by_id)
    assert all(row["caption"] for row in by_id.values())
    # once: the progress count walks the folder too, and said it again
    assert r.stderr.count(f"'{root / 'linked'}' is a symlink to a folder: not followed") == 1, \
        r.stderr
