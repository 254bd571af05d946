"""Writes the seeds of the `image` fuzz target whose size sl_image_decode
reads to gate a decode held whole (src/image/image.c, from each decoder's
header read: libjpeg's for a progressive JPEG, libvips' for the rest):
interlaced (Adam7) PNGs, progressive JPEG SOFs and GIFs whose logical
screen is smaller or larger than their frame (the canvas grows to the
frame). Each is small: decodable, or at
sizes past or near the gate's floor with too few bytes behind them, past
the pixel limit, zero, or cut short inside the header itself. Standard
library only; the progressive JPEG seeds are the corpus' progressive.jpg
with its SOF2 rewritten.

    python3 fuzz/gen_image_corpus.py
"""
import pathlib
import struct
import zlib

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "image"

# Adam7's passes: (x0, y0, dx, dy)
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, depth, colour, interlace, idat):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def adam7_rgb(width, height):
    """A real interlaced 8-bit RGB picture: a gradient, each pass its rows."""
    raw = bytearray()
    for x0, y0, dx, dy in ADAM7:
        xs = range(x0, width, dx)
        if not xs:
            continue
        for y in range(y0, height, dy):
            raw.append(0)  # filter: none
            for x in xs:
                raw += bytes((x * 255 // width, y * 255 // height, (x ^ y) & 255))
    return png(width, height, 8, 2, 1, zlib.compress(bytes(raw)))


def gif(screen_w, screen_h, frame_w=1, frame_h=1):
    """A GIF89a of one frame_w x frame_h frame of colour 0 on that screen."""
    head = b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame_w, frame_h, 0)
    # LZW at code size 2: clear (4), a pixel 0 per pixel (one code each,
    # the table reset by a clear before it would widen), end (5)
    codes, bits, nbits = [4], 0, 0
    for _ in range(frame_w * frame_h):
        codes += [0, 4]
    codes.append(5)
    data = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += 3
        while nbits >= 8:
            data.append(bits & 255)
            bits >>= 8
            nbits -= 8
    if nbits:
        data.append(bits)
    blocks = b"".join(bytes((len(data[k:k + 255]),)) + data[k:k + 255] for k in range(0, len(data), 255))
    return head + image + b"\x02" + blocks + b"\x00\x3b"


def jpeg_sof2(base, width=None, height=None, cut=None, components=None, sampling=None):
    """progressive.jpg (4:2:0) with its SOF2's size (component count, each
    component's sampling byte) replaced; cut: the file ends that many bytes
    into the SOF2 segment."""
    at = 2
    while base[at + 1] != 0xC2:
        at += 2 + struct.unpack(">H", base[at + 2:at + 4])[0]
    sof = bytearray(base[at:at + 2 + struct.unpack(">H", base[at + 2:at + 4])[0]])
    if height is not None:
        sof[5:7] = struct.pack(">H", height)
    if width is not None:
        sof[7:9] = struct.pack(">H", width)
    if components is not None:
        sof[9] = components
    if sampling is not None:
        for k in range(sof[9]):
            sof[11 + 3 * k] = sampling
    out = base[:at] + bytes(sof) + base[at + len(sof):]
    return out[:at + cut] if cut is not None else out


def main():
    base = (OUT / "progressive.jpg").read_bytes()
    seeds = {
        # interlaced PNG: a real one; one of 1500x1500 16-bit RGBA (18 MB
        # held whole, past the gate's 16 MiB floor) whose data ends at once;
        # one past any pixel limit; a zero width; a file that ends with its
        # IHDR's interlace byte
        "adam7-rgb.png": adam7_rgb(13, 11),
        "adam7-rgba16-gated-short.png": png(1500, 1500, 16, 6, 1, zlib.compress(b"\x00" * 64)),
        "adam7-huge.png": png(0x7FFFFFFF, 0x7FFFFFFF, 16, 6, 1, zlib.compress(b"\x00" * 16)),
        "adam7-zero-width.png": png(0, 7, 8, 2, 1, zlib.compress(b"\x00" * 16)),
        "adam7-ihdr-cut.png": png(9, 9, 8, 3, 1, b"")[:29],
        # GIF: a frame on a larger screen; a screen of 2048x2048 (16 MiB:
        # the floor) with a 1x1 frame; the largest screen; a zero screen
        # with a frame; the screen descriptor cut short
        "gif-frame-on-screen.gif": gif(9, 7, 3, 2),
        "gif-screen-gated.gif": gif(2048, 2048),
        "gif-screen-huge.gif": gif(65535, 65535),
        "gif-screen-zero.gif": gif(0, 0, 2, 2),
        "gif-screen-cut.gif": gif(5, 5)[:9],
        # progressive JPEG: 2000x2000 4:4:4 (24 MB of coefficients, past the
        # floor; 4:2:0 would be 12 MB) on a 40x27 4:2:0 picture's scans; past the pixel limit; zero height (DNL); cut inside its SOF
        # before the size, at the component count, before the components and
        # right after them; 255 components claimed
        "jpeg-sof2-gated-short.jpg": jpeg_sof2(base, width=2000, height=2000, sampling=0x11),
        "jpeg-sof2-huge.jpg": jpeg_sof2(base, width=65535, height=65535),
        "jpeg-sof2-zero-height.jpg": jpeg_sof2(base, height=0),
        "jpeg-sof2-cut-size.jpg": jpeg_sof2(base, cut=6),
        "jpeg-sof2-cut-count.jpg": jpeg_sof2(base, cut=10),
        "jpeg-sof2-cut-components.jpg": jpeg_sof2(base, cut=12),
        "jpeg-sof2-cut-after.jpg": jpeg_sof2(base, cut=19),
        "jpeg-sof2-255-components.jpg": jpeg_sof2(base, components=255),
    }
    for name, data in seeds.items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
