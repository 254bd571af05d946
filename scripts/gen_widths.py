#!/usr/bin/env python3
"""Prints the terminal-column tables of src/cli/printer.c (zero_width[],
wide[]) from Python's unicodedata, by the rule of Markus Kuhn's wcwidth
(what Python's wcwidth package follows, and glibc but for 85 code points
in a few blocks): combining marks (Mn, Me)
and format characters (Cf, but for U+00AD), with Hangul's medial vowels and
final consonants (U+1160-U+11FF, U+D7B0-U+D7FF), take no column; East
Asian Wide and Fullwidth characters take two; the rest one. Unassigned code
points join the run around them, but unassigned CJK ideographs (and planes 2
and 3), which EastAsianWidth.txt makes wide. Run: python3 scripts/gen_widths.py."""
import unicodedata as u


def width(cp):
    c = chr(cp)
    cat = u.category(c)
    if cat in ("Cn", "Cs", "Co"):
        # EastAsianWidth.txt: unassigned CJK ideographs, and planes 2 and
        # 3, default to wide (a newer Unicode's Extension H is wide)
        wide = (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFD), \
            (0x30000, 0x3FFFD)
        return 2 if cat == "Cn" and any(a <= cp <= b for a, b in wide) else None
    if cat in ("Mn", "Me") or (cat == "Cf" and cp != 0xAD) or 0x1160 <= cp <= 0x11FF \
            or 0xD7B0 <= cp <= 0xD7FF:
        return 0
    return 2 if u.east_asian_width(c) in ("W", "F") else 1


def ranges(want):
    out, start, last = [], None, None
    for cp in range(0x300, 0x110000):
        w = width(cp)
        if w is None:
            continue
        if w == want:
            start = cp if start is None else start
            last = cp
        elif start is not None:
            out.append((start, last))
            start = None
    if start is not None:
        out.append((start, last))
    return out


def table(name, rs):
    print(f"static const uint32_t {name}[][2] = {{")
    for i in range(0, len(rs), 4):
        print("    " + " ".join(f"{{0x{a:04X}, 0x{b:04X}}}," for a, b in rs[i:i + 4]))
    print("};")


print(f"/* Unicode {u.unidata_version}: scripts/gen_widths.py */")
table("zero_width", ranges(0))
table("wide", ranges(2))
