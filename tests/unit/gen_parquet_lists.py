"""Writes the Parquet files with list columns that tests/unit/test_parquet.c
(and test_source.c) read, and `expected.json` beside them: for each file the
rows as this script built them (not as any reader reads them back), the
list and element names of its columns, or the error reading it must give.

    .venv/bin/python tests/unit/gen_parquet_lists.py DIR

Two writers: pyarrow (every codec, dictionary and plain, data pages v1 and
v2, several row groups, the legacy `list.item` names), and a small one here
for what pyarrow never writes: rows that span pages (pyarrow cuts pages at
row boundaries), the 2-level legacy forms (`repeated binary array`, a bare
top-level repeated field, a repeated struct), and corrupt lists.
"""
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from test_parquet import Compact  # noqa: E402  (an independent Thrift compact encoder)

IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def jv(v):
    """A value as the C test prints it: bytes as 0x + hex."""
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, list):
        return [jv(x) for x in v]
    if isinstance(v, dict):
        return {k: jv(x) for k, x in v.items()}
    return v


def arrow_rows(n):
    tags, nums, images, flat = [], [], [], []
    for k in range(n):
        if k % 9 == 4:
            tags.append(None)
        elif k % 9 == 5:
            tags.append([])
        else:  # row 13 is long: 40 elements over many 64-byte pages
            tags.append([None if (k + j) % 7 == 3 else f"t{k}-{j % 3}" for j in range(40 if k == 13 else k % 4 + 1)])
        nums.append(None if k % 11 == 2 else [k * 100 + j for j in range(k % 3)])
        if k % 8 == 1:
            images.append(None)
        elif k % 8 == 6:
            images.append([])
        else:
            images.append([None if (k + j) % 5 == 4 else
                           {"bytes": None if (k + j) % 3 == 1 else bytes([k, j, 7]) * (j + 1),
                            "path": None if (k + j) % 4 == 2 else f"img{k % 4}-{j}.png"}
                           for j in range(k % 3 + 1)])
        flat.append(None if k % 6 == 0 else k - 3)
    return tags, nums, images, flat


def arrow_files(d, out):
    n = 40
    tags, nums, images, flat = arrow_rows(n)
    table = pa.table({"tags": pa.array(tags, pa.list_(pa.string())), "nums": pa.array(nums, pa.list_(pa.int64())),
                      "images": pa.array(images, pa.list_(IMG)), "n": pa.array(flat, pa.int32())})

    def rows(el):
        out_rows = []
        for k in range(n):
            bs = None if images[k] is None else [None if e is None else e["bytes"] for e in images[k]]
            ps = None if images[k] is None else [None if e is None else e["path"] for e in images[k]]
            out_rows.append({f"tags.list.{el}": tags[k], f"nums.list.{el}": nums[k], f"images.list.{el}.bytes": bs,
                             f"images.list.{el}.path": ps, "n": flat[k]})
        return out_rows

    def lists(el):
        return {f"tags.list.{el}": ["tags", f"tags.list.{el}"], f"nums.list.{el}": ["nums", f"nums.list.{el}"],
                f"images.list.{el}.bytes": ["images", f"images.list.{el}"],
                f"images.list.{el}.path": ["images", f"images.list.{el}"], "n": None}

    for codec, dictionary, version in [("none", True, "1.0"), ("snappy", True, "2.0"), ("snappy", False, "1.0"),
                                       ("zstd", False, "2.0"), ("zstd", True, "1.0"), ("gzip", True, "2.0")]:
        name = f"arrow-{codec}-{'dict' if dictionary else 'plain'}-v{version[0]}.parquet"
        pq.write_table(table, d / name, compression=codec, use_dictionary=dictionary, data_page_version=version,
                       row_group_size=7, data_page_size=64)
        out[name] = {"rows": jv(rows("element")), "lists": lists("element"), "row_groups": 6}
    name = "arrow-legacy-item.parquet"
    pq.write_table(table, d / name, use_compliant_nested_type=False, row_group_size=16, data_page_size=128)
    out[name] = {"rows": jv(rows("item")), "lists": lists("item"), "row_groups": 3}


# ---- a small writer: v1 pages, PLAIN, uncompressed, levels as RLE runs ----

def rle_levels(levels, width):
    """The RLE/bit-packed hybrid with one RLE run per value (4-byte length first)."""
    body = bytearray()
    for v in levels:
        body.append(2)  # run header: 1 value, RLE
        body += v.to_bytes((width + 7) // 8, "little")
    return len(body).to_bytes(4, "little") + bytes(body)


def plain(values, typ):
    out = bytearray()
    for v in values:
        if typ == "int64":
            out += v.to_bytes(8, "little", signed=True)
        else:
            b = v.encode() if isinstance(v, str) else v
            out += len(b).to_bytes(4, "little") + b
    return bytes(out)


def leaf_levels(rows, list_def, max_def, field=None):
    """(rep, def, values) of a leaf in a list: a null list is def list_def - 1,
    an empty one list_def, an element rep_def = list_def + 1 when null (or
    its field is null), max_def when it holds a value."""
    rep, dfn, vals = [], [], []
    for row in rows:
        if row is None or not row:
            rep.append(0)
            dfn.append(list_def - 1 if row is None else list_def)
            continue
        for j, e in enumerate(row):
            v = e if field is None or e is None else e[field]
            rep.append(0 if j == 0 else 1)
            dfn.append(max_def if v is not None else list_def + 1)
            if v is not None:
                vals.append(v)
    return rep, dfn, vals


def hand_file(path, schema, leaves, num_rows, page_levels):
    """schema: (name, type, repetition, children, utf8) depth first after the
    root; leaves: (path parts, type, rep, def, values, max_def; rep is def
    for a flat column), each cut
    into data pages of page_levels levels (a row may span pages)."""
    body = bytearray(b"PAR1")
    chunks = []
    for parts, typ, rep, dfn, vals, max_def, *more in leaves:
        max_rep = more[0] if more else 1
        start = len(body)
        vi = 0
        for at in range(0, len(rep), page_levels):
            r, d = rep[at:at + page_levels], dfn[at:at + page_levels]
            nv = sum(1 for x in d if x == max_def)
            data = (rle_levels(r, max_rep.bit_length()) if rep is not dfn else b"") + \
                (rle_levels(d, max_def.bit_length()) if max_def else b"") + plain(vals[vi:vi + nv], typ)
            vi += nv
            h = Compact()
            h.begin()
            h.i32(1, 0)  # DATA_PAGE
            h.i32(2, len(data))
            h.i32(3, len(data))
            h.begin(5)
            h.i32(1, len(r))
            h.i32(2, 0)  # PLAIN
            h.i32(3, 3)  # RLE
            h.i32(4, 3)
            h.end()
            h.end()
            body += bytes(h.out) + data
        chunks.append((parts, typ, len(rep), start, len(body) - start))
    t = Compact()
    t.begin()
    t.i32(1, 1)
    t.list(2, 12, len(schema) + 1)
    for name, typ, repetition, children, utf8 in [("schema", None, None, len([s for s in schema if s[5]]), False)] + \
            [s[:5] for s in schema]:
        t.begin()
        if typ is not None:
            t.i32(1, {"int64": 2, "binary": 6}[typ])
        if repetition is not None:
            t.i32(3, repetition)
        t.string(4, name)
        if children is not None:
            t.i32(5, children)
        if utf8:
            t.i32(6, 0)
        t.end()
    t.i64(3, num_rows)
    t.list(4, 12, 1)
    t.begin()
    t.list(1, 12, len(chunks))
    for parts, typ, nvals, start, size in chunks:
        t.begin()
        t.i64(2, start)
        t.begin(3)
        t.i32(1, {"int64": 2, "binary": 6}[typ])
        t.list(2, 5, 1)
        t.zigzag(0)
        t.list(3, 8, len(parts))
        for part in parts:
            t.varint(len(part))
            t.out += part.encode()
        t.i32(4, 0)
        t.i64(5, nvals)
        t.i64(6, size)
        t.i64(7, size)
        t.i64(9, start)
        t.end()
        t.end()
    t.i64(2, len(body))
    t.i64(3, num_rows)
    t.end()
    t.end()
    footer = bytes(t.out)
    path.write_bytes(bytes(body) + footer + len(footer).to_bytes(4, "little") + b"PAR1")


OPT, REQ, REP = 1, 0, 2


def hand_files(d, out):
    strs = [["a", "bb", None, "ccc"], None, [], ["d"], [f"long{j}" for j in range(23)], [None], ["e", "f"]]
    full = [r if r is None else [x for x in r if x is not None] for r in strs]  # no null elements
    # The standard 3-level list, pages of 5 levels: rows 0 and 4 span pages.
    sch = [("tags", None, OPT, 1, False, True), ("list", None, REP, 1, False, False),
           ("element", "binary", OPT, None, True, False)]
    rep, dfn, vals = leaf_levels(strs, 1, 3)
    hand_file(d / "hand-3level.parquet", sch, [(["tags", "list", "element"], "binary", rep, dfn, vals, 3)],
              len(strs), 5)
    out["hand-3level.parquet"] = {"rows": [{"tags.list.element": r} for r in strs],
                                  "lists": {"tags.list.element": ["tags", "tags.list.element"]}, "row_groups": 1}
    # 2-level: `optional group tags (LIST) { repeated binary array (UTF8) }`.
    sch = [("tags", None, OPT, 1, False, True), ("array", "binary", REP, None, True, False)]
    rep, dfn, vals = leaf_levels(full, 1, 2)
    hand_file(d / "hand-2level.parquet", sch, [(["tags", "array"], "binary", rep, dfn, vals, 2)], len(full), 3)
    out["hand-2level.parquet"] = {"rows": [{"tags.array": r} for r in full],
                                  "lists": {"tags.array": ["tags", "tags.array"]}, "row_groups": 1}
    # A bare repeated field at the top level: no null lists (null reads as empty).
    bare = [[] if r is None else r for r in full]
    sch = [("tags", "binary", REP, None, True, True)]
    rep, dfn, vals = leaf_levels(bare, 0, 1)
    hand_file(d / "hand-bare.parquet", sch, [(["tags"], "binary", rep, dfn, vals, 1)], len(bare), 4)
    out["hand-bare.parquet"] = {"rows": [{"tags": r} for r in bare], "lists": {"tags": ["tags", "tags"]},
                                "row_groups": 1}
    # 2-level struct: `optional group images (LIST) { repeated group array { optional binary bytes;
    # optional binary path (UTF8) } }`, and a required int64 beside it.
    imgs = [[{"bytes": b"\x01\x02", "path": "a.png"}, {"bytes": None, "path": "b.png"}], None, [],
            [{"bytes": b"\xff" * 9, "path": None}] * 5, [{"bytes": None, "path": None}]]
    sch = [("images", None, OPT, 1, False, True), ("array", None, REP, 2, False, False),
           ("bytes", "binary", OPT, None, False, False), ("path", "binary", OPT, None, True, False),
           ("id", "int64", REQ, None, False, True)]
    leaves = []
    for f in ("bytes", "path"):
        rep, dfn, vals = leaf_levels(imgs, 1, 3, f)
        leaves.append((["images", "array", f], "binary", rep, dfn, vals, 3))
    ids = list(range(100, 100 + len(imgs)))
    flat = [0] * len(ids)
    leaves.append((["id"], "int64", flat, flat, ids, 0))  # rep is def: a flat column, no levels
    hand_file(d / "hand-2level-struct.parquet", sch, leaves, len(imgs), 3)
    out["hand-2level-struct.parquet"] = {
        "rows": jv([{"images.array.bytes": None if r is None else [e["bytes"] for e in r],
                     "images.array.path": None if r is None else [e["path"] for e in r], "id": i}
                    for r, i in zip(imgs, ids)]),
        "lists": {"images.array.bytes": ["images", "images.array"], "images.array.path": ["images", "images.array"],
                  "id": None}, "row_groups": 1}

    # Corrupt: the struct's two fields disagree on row 1's list.
    other = [imgs[0], [{"bytes": None, "path": "x"}]] + imgs[2:]
    leaves = []
    for f, data in (("bytes", imgs), ("path", other)):
        rep, dfn, vals = leaf_levels(data, 1, 3, f)
        leaves.append((["images", "array", f], "binary", rep, dfn, vals, 3))
    hand_file(d / "bad-disagree.parquet", sch[:4], leaves, len(imgs), 4)
    out["bad-disagree.parquet"] = {"error": "differ from those of column 'images.array.bytes'"}
    sch3 = [("tags", None, OPT, 1, False, True), ("list", None, REP, 1, False, False),
            ("element", "binary", OPT, None, True, False)]
    rep, dfn, vals = leaf_levels(strs, 1, 3)
    hand_file(d / "bad-first-rep.parquet", sch3, [(["tags", "list", "element"], "binary", [1] + rep[1:], dfn, vals,
                                                   3)], len(strs), 5)
    out["bad-first-rep.parquet"] = {"error": "repetition level 1 continues no list"}
    hand_file(d / "bad-rows.parquet", sch3, [(["tags", "list", "element"], "binary", rep, dfn, vals, 3)],
              len(strs) - 1, 5)
    out["bad-rows.parquet"] = {"error": "levels hold more rows than the row group's 6"}
    hand_file(d / "bad-few-rows.parquet", sch3, [(["tags", "list", "element"], "binary", rep, dfn, vals, 3)],
              len(strs) + 1, 5)
    out["bad-few-rows.parquet"] = {"error": "column chunk holds 7 rows, its row group 8"}
    bad = list(rep)
    bad[dfn.index(0)] = 1  # the null list (def 0) marked as continuing the row before
    hand_file(d / "bad-null-in-list.parquet", sch3, [(["tags", "list", "element"], "binary", bad, dfn, vals, 3)],
              len(strs) - 1, 5)
    out["bad-null-in-list.parquet"] = {"error": "an empty or null list inside a list"}


def special_files(d, out):
    # Many rows of null and empty lists in few bytes: read in bounded memory.
    n = 300_000
    pq.write_table(pa.table({"tags": pa.array([None if k % 2 else [] for k in range(n)], pa.list_(pa.string()))}),
                   d / "many-null-lists.parquet", row_group_size=n)
    out["many-null-lists.parquet"] = {"num_rows": n, "skip_rows": True}
    # One row of 10 elements, for the batch_rows limit.
    pq.write_table(pa.table({"tags": pa.array([["x"], [str(j) for j in range(10)], []])}), d / "ten.parquet")
    out["ten.parquet"] = {"rows": [{"tags.list.element": r} for r in [["x"], [str(j) for j in range(10)], []]],
                          "lists": {"tags.list.element": ["tags", "tags.list.element"]}, "row_groups": 1}
    # Lists nested five deep stay unsupported.
    pq.write_table(pa.table({"ll": pa.array([[[[[[1]]]]], [], None]), "n": pa.array([1, 2, 3])}),
                   d / "nested.parquet")
    out["nested.parquet"] = {"error": "lists nested more than 4 deep",
                             "unsupported": "ll" + ".list.element" * 5}


def nested_rows(n):
    """Lists of lists (two and three deep), a list of structs with a list
    field, maps with string keys and with int keys and list values: nulls
    and empty lists at every depth."""
    ll, lll, objs, m, mi, flat = [], [], [], [], [], []
    for k in range(n):
        if k % 7 == 3:
            ll.append(None)
        elif k % 7 == 5:
            ll.append([])
        else:
            ll.append([None if (k + j) % 5 == 2 else [] if (k + j) % 5 == 3 else
                       [None if (k + j + i) % 4 == 1 else f"s{k}-{j}-{i}" for i in range((k + j) % 3 + 1)]
                       for j in range(k % 3 + 1)])
        lll.append(None if k % 5 == 1 else
                   [[list(range(k, k + (j + i) % 3)) if (k + i) % 4 else None for i in range(j % 2 + 1)]
                    for j in range(k % 3)])
        objs.append(None if k % 6 == 2 else
                    [None if (k + j) % 4 == 3 else
                     {"name": None if (k + j) % 5 == 1 else f"o{k}-{j}",
                      "box": None if (k + j) % 3 == 2 else [k, j, k + j, 2 * k][:(k + j) % 5]}
                     for j in range(k % 4)])
        m.append(None if k % 4 == 3 else [(f"k{j}", None if j == 1 else k * j) for j in range(k % 3)])
        mi.append(None if k % 5 == 0 else
                  [(j, None if (k + j) % 3 == 0 else [f"v{i}" for i in range(j)]) for j in range(k % 3)])
        flat.append(k)
    return ll, lll, objs, m, mi, flat


def nested_files(d, out):
    n = 40
    ll, lll, objs, m, mi, flat = nested_rows(n)
    obj = pa.struct([("name", pa.string()), ("box", pa.list_(pa.int64()))])
    table = pa.table({"ll": pa.array(ll, pa.list_(pa.list_(pa.string()))),
                      "lll": pa.array(lll, pa.list_(pa.list_(pa.list_(pa.int32())))),
                      "objs": pa.array(objs, pa.list_(obj)),
                      "m": pa.array(m, pa.map_(pa.string(), pa.int32())),
                      "mi": pa.array(mi, pa.map_(pa.int32(), pa.list_(pa.string()))),
                      "n": pa.array(flat, pa.int64())})
    E = ".list.element"

    def field(rows, f):
        return [None if r is None else [None if e is None else e[f] for e in r] for r in rows]

    def pairs(rows, i):
        return [None if r is None else [kv[i] for kv in r] for r in rows]

    per_leaf = {"ll" + E * 2: ll, "lll" + E * 3: lll, "objs" + E + ".name": field(objs, "name"),
                "objs" + E + ".box" + E: field(objs, "box"), "m.key_value.key": pairs(m, 0),
                "m.key_value.value": pairs(m, 1), "mi.key_value.key": pairs(mi, 0),
                "mi.key_value.value" + E: pairs(mi, 1), "n": flat}
    rows = [{c: v[k] for c, v in per_leaf.items()} for k in range(n)]
    nest = {"ll" + E * 2: [["ll", "ll" + E], ["ll" + E, "ll" + E * 2]],
            "lll" + E * 3: [["lll", "lll" + E], ["lll" + E, "lll" + E * 2], ["lll" + E * 2, "lll" + E * 3]],
            "objs" + E + ".name": [["objs", "objs" + E]],
            "objs" + E + ".box" + E: [["objs", "objs" + E], ["objs" + E + ".box", "objs" + E + ".box" + E]],
            "m.key_value.key": [["m", "m.key_value"]], "m.key_value.value": [["m", "m.key_value"]],
            "mi.key_value.key": [["mi", "mi.key_value"]],
            "mi.key_value.value" + E: [["mi", "mi.key_value"], ["mi.key_value.value", "mi.key_value.value" + E]],
            "n": []}
    maps = {c: 1 if c.startswith("m") else 0 for c in nest}
    # Each list whole, as sl_pq_column_json puts it back together: a map with
    # string keys an object, with other keys an array of {key, value}; a
    # null struct element null (its `name` leaf's definition level says so),
    # not an object of nulls, which some elements are.
    assert any(e is None for o in objs for e in o or [])
    assert any(e == {"name": None, "box": None} for o in objs for e in o or [])
    whole = [{"ll": ll[k], "lll": lll[k],
              "objs": objs[k],
              "m": None if m[k] is None else {kk: v for kk, v in m[k]},
              "mi": None if mi[k] is None else [{"key": kk, "value": v} for kk, v in mi[k]]} for k in range(n)]
    # Each list's shape (io/parquet_shape.h) as the table above declares it:
    # int32 is int64, a map with string keys a map, with other keys a list
    # of {key, value} structs.
    shapes = {"ll": {"list": {"list": "string"}}, "lll": {"list": {"list": {"list": "int64"}}},
              "objs": {"list": {"struct": [["name", "string"], ["box", {"list": "int64"}]]}},
              "m": {"map": "int64"}, "mi": {"list": {"struct": [["key", "int64"], ["value", {"list": "string"}]]}}}
    for codec, dictionary, version in [("snappy", True, "1.0"), ("zstd", False, "2.0"), ("none", True, "2.0")]:
        name = f"nested-{codec}-{'dict' if dictionary else 'plain'}-v{version[0]}.parquet"
        pq.write_table(table, d / name, compression=codec, use_dictionary=dictionary, data_page_version=version,
                       row_group_size=9, data_page_size=64)
        out[name] = {"rows": rows, "nest": nest, "maps": maps, "whole": whole, "shapes": shapes, "row_groups": 5,
                     "lists": {c: v[0] if v else None for c, v in nest.items()}}

    # By hand: list<list<binary>> with rows across pages of 4 levels.
    nested = [[["a", None], None, [], ["b"]], None, [], [[f"x{j}" for j in range(9)]], [None, None], [[None]]]
    sch = [("ll", None, OPT, 1, False, True), ("list", None, REP, 1, False, False),
           ("element", None, OPT, 1, False, False), ("list", None, REP, 1, False, False),
           ("element", "binary", OPT, None, True, False)]
    rep, dfn, vals = [], [], []
    for row in nested:
        if not row:
            rep.append(0)
            dfn.append(0 if row is None else 1)
        for j, inner in enumerate(row or []):
            r = 0 if j == 0 else 1
            if not inner:
                rep.append(r)
                dfn.append(2 if inner is None else 3)
            for i, v in enumerate(inner or []):
                rep.append(r if i == 0 else 2)
                dfn.append(5 if v is not None else 4)
                vals += [v] if v is not None else []
    leaf = (["ll", "list", "element", "list", "element"], "binary", rep, dfn, vals, 5, 2)
    hand_file(d / "hand-nested.parquet", sch, [leaf], len(nested), 4)
    col = "ll" + E * 2
    out["hand-nested.parquet"] = {"rows": [{col: r} for r in nested], "row_groups": 1,
                                  "lists": {col: ["ll", "ll" + E]}, "nest": {col: [["ll", "ll" + E], ["ll" + E, col]]}}
    # Corrupt: a level continuing an inner list (repetition 2) after an empty
    # one, in `repeated group a { repeated int64 b }`.
    sch = [("a", None, REP, 1, False, True), ("b", "int64", REP, None, False, False)]
    rep, dfn = [0, 2, 1, 2, 0, 0], [2, 2, 1, 2, 0, 2]  # row 0's empty second list (def 1), then rep 2
    hand_file(d / "bad-nested-continue.parquet", sch, [(["a", "b"], "int64", rep, dfn, [1, 2, 9, 3], 2, 2)],
              3, 3)
    out["bad-nested-continue.parquet"] = {"error": "repetition level 2 continues no list"}


def null_struct_files(d, out):
    """Structs inside lists whose leaves are all in lists (or maps) of their
    own, null and not: no leaf value tells a null struct from a struct of
    null lists, only the lists' definition levels do."""
    sl = [[{"tags": ["a"]}, None, {"tags": None}, {"tags": []}], None, [], [None], [{"tags": ["b", "c"]}, None]]
    deep = [[{"inner": None, "m": [("k", 1)]}, None, {"inner": {"l": None}, "m": None},
             {"inner": {"l": [1, 2]}, "m": []}], None, [None, None], [{"inner": {"l": []}, "m": [("x", None)]}], []]
    inner = pa.struct([("l", pa.list_(pa.int64()))])
    table = pa.table({"sl": pa.array(sl, pa.list_(pa.struct([("tags", pa.list_(pa.string()))]))),
                      "deep": pa.array(deep, pa.list_(pa.struct([("inner", inner),
                                                                 ("m", pa.map_(pa.string(), pa.int64()))])))})

    def as_json(e):
        if e is None or e["m"] is None:
            return e
        return {"inner": e["inner"], "m": dict(e["m"])}
    whole = [{"sl": sl[k], "deep": None if deep[k] is None else [as_json(e) for e in deep[k]]} for k in range(len(sl))]
    assert any(e is None for r in sl if r for e in r) and any(e == {"tags": None} for r in sl if r for e in r)
    shapes = {"sl": {"list": {"struct": [["tags", {"list": "string"}]]}},
              "deep": {"list": {"struct": [["inner", {"struct": [["l", {"list": "int64"}]]}], ["m", {"map": "int64"}]]}}}
    for version in ("1.0", "2.0"):
        name = f"null-structs-v{version[0]}.parquet"
        pq.write_table(table, d / name, data_page_version=version, row_group_size=2, data_page_size=32)
        out[name] = {"whole": whole, "shapes": shapes}


def source_files(d, out):
    """For test_source.c: an image dataset with a list column of structs,
    one of path strings, and a pass-through list of tags."""
    imgs = [[{"bytes": b"IMG0", "path": "zero.png"}, {"bytes": None, "path": "one.png"}],
            [{"bytes": b"IMG2", "path": None}],
            [],
            None,
            [{"bytes": None, "path": None}],
            [{"bytes": b"X", "path": None}] * 17,
            [{"bytes": b"Y" * 5000, "path": None}]]
    paths = [["a.jpg", "sub/b.jpg"], ["https://example.com/c.jpg"], [], None, [None], ["p"] * 17, ["z.jpg"]]
    tags = [["a", "b"], [], None, ["c"], [None], ["d"], ["e"]]
    pq.write_table(pa.table({"images": pa.array(imgs, pa.list_(IMG)), "tags": pa.array(tags, pa.list_(pa.string())),
                             "k": pa.array(range(len(imgs)), pa.int64())}), d / "src-structs.parquet",
                   row_group_size=3, data_page_size=64)
    pq.write_table(pa.table({"images": pa.array(paths, pa.list_(pa.string())),
                             "k": pa.array(range(len(paths)), pa.int64())}), d / "src-paths.parquet")
    out["src-structs.parquet"] = {"images": jv(imgs), "tags": tags}
    out["src-paths.parquet"] = {"images": paths}


def main():
    d = pathlib.Path(sys.argv[1])
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    arrow_files(d, out)
    hand_files(d, out)
    special_files(d, out)
    nested_files(d, out)
    null_struct_files(d, out)
    source_files(d, out)
    (d / "expected.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
