"""End-to-end tests of the input sources and the richer sinks (docs/inputs.md,
docs/output.md): manifests (JSONL, CSV), WebDataset shards made with tarfile,
Parquet written by pyarrow, http(s) URLs from a local http.server, folder
globs; pass-through columns read back by pyarrow and DuckDB; --shard-rows and
--include-image-bytes; broken inputs as failed rows naming the input and the
cause, every row exactly once, no sanitizer report."""
import base64
import csv
import functools
import http.server
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import SAMPLES, sample_images
from localserver import LocalServer

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault")
FAST = ("--max-tokens", "3", "--metrics-addr", "off")


def run(sluice, inputs, out, *extra):
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    r = sluice.run("caption", *inputs, "-o", out, "--model", sluice_model(), "--mmproj",
                   sluice_model("mmproj"), *FAST, *extra)
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    return r


def sluice_model(name="model"):
    from conftest import TINY
    return TINY / f"{name}.gguf"


def jsonl_rows(out: pathlib.Path) -> list[dict]:
    rows = []
    for shard in sorted(out.glob("part-*.jsonl")):
        rows += [json.loads(l) for l in shard.read_text(encoding="utf-8").splitlines()]
    return rows


def by_id(rows):
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"a row twice: {ids}"
    return {r["id"]: r for r in rows}


JPEGS = [p for p in sample_images() if p.suffix == ".jpg"]


# ---- manifests -------------------------------------------------------------------


def test_jsonl_manifest_passes_columns_through_to_jsonl_and_parquet(sluice, tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    for p in JPEGS[:3]:
        (data / "img" / p.name).write_bytes(p.read_bytes())
    long_prompt = "Describe this image in great detail, listing every object, colour and texture."
    lines = [
        json.dumps({"id": "first", "image": f"img/{JPEGS[0].name}", "label": 7, "score": 0.25,
                    "tags": ["a", "b"], "caption": "human caption", "note": "héllo 日本"}),
        json.dumps({"image": f"img/{JPEGS[1].name}", "label": 8, "score": 1, "ok": True,
                    "prompt": long_prompt}),
        "{this is not json",
        "",
        json.dumps(["an", "array"]),
        json.dumps({"image": "img/missing.jpg", "label": 9}),
        json.dumps({"path": str(data / "img" / JPEGS[2].name), "label": "ten"}),
        json.dumps({"label": 11}),
        json.dumps({"image": "img/a\u0000b.jpg"}),  # a NUL would cut the path
    ]
    manifest = data / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")

    r = run(sluice, manifest, tmp_path / "j")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "j"))
    assert set(rows) == {"first", "m.jsonl:2", "m.jsonl:3", "m.jsonl:5", "m.jsonl:6", "m.jsonl:7",
                         "m.jsonl:8", "m.jsonl:9"}
    first = rows["first"]
    assert first["error"] is None and first["caption"]
    assert first["path"] == str(data / "img" / JPEGS[0].name)  # relative to the manifest
    assert first["label"] == 7 and first["score"] == 0.25 and first["tags"] == ["a", "b"]
    assert first["note"] == "héllo 日本"
    assert first["input_caption"] == "human caption"  # never clobbers ours
    assert "image" not in first and "input_id" not in first
    # A per-row prompt replaces the job prompt: more prompt tokens.
    assert rows["m.jsonl:2"]["prompt_tokens"] > first["prompt_tokens"] + 5
    assert rows["m.jsonl:2"]["prompt"] == long_prompt and rows["m.jsonl:2"]["ok"] is True
    assert rows["m.jsonl:3"]["error_stage"] == "read"
    assert "m.jsonl:3" in rows["m.jsonl:3"]["error"] and "invalid JSON" in rows["m.jsonl:3"]["error"]
    assert "not a JSON object" in rows["m.jsonl:5"]["error"]
    assert "a string holds \\u0000 (NUL)" in rows["m.jsonl:9"]["error"]
    assert rows["m.jsonl:6"]["error_stage"] == "decode" and "missing.jpg" in rows["m.jsonl:6"]["error"]
    assert rows["m.jsonl:6"]["label"] == 9
    assert rows["m.jsonl:7"]["error"] is None and rows["m.jsonl:7"]["label"] == "ten"
    assert "no 'image' column" in rows["m.jsonl:8"]["error"]

    r = run(sluice, manifest, tmp_path / "p", "--format", "parquet")
    assert r.returncode == 3, r.stderr
    shard = tmp_path / "p" / "part-00000.parquet"
    table = pq.read_table(shard)
    types = {f.name: str(f.type) for f in table.schema}
    assert types["label"] == "string"  # ints and a string: the column varies
    assert types["score"] == "double"  # 0.25 and 1
    assert types["ok"] == "bool" and types["note"] == "string" and types["tags"] == "list<element: string>"
    assert types["input_caption"] == "string" and types["caption"] == "string"
    prow = {r["id"]: r for r in table.to_pylist()}
    assert set(prow) == set(rows)
    assert prow["first"]["label"] == "7" and prow["first"]["score"] == 0.25
    assert prow["first"]["tags"] == ["a", "b"] and prow["first"]["note"] == "héllo 日本"
    assert prow["m.jsonl:2"]["score"] == 1.0 and prow["m.jsonl:2"]["ok"] is True
    assert prow["first"]["ok"] is None
    assert prow["first"]["caption"] == rows["first"]["caption"]
    con = duckdb.connect()
    got = dict(con.execute(f"select id, input_caption from '{shard}'").fetchall())
    assert got["first"] == "human caption" and got["m.jsonl:2"] is None
    (n,) = con.execute(f"select count(*) from '{shard}' where score = 0.25").fetchone()
    assert n == 1


def test_json_array_manifest_as_llava_ships_it(sluice, tmp_path):
    """A .json manifest holding one array of objects (LLaVA's
    llava_v1_5_mix665k.json shape: id, image relative to an image tree,
    conversations): a row per element, its id the element's, the other keys
    passed through; --image-root names the image tree. Elements that are not
    objects fail alone, naming FILE:N; a file cut inside an element gives the
    rows before it and one failed row; a .json that is no array fails that
    input; a missing --image-root is a usage error."""
    import gzip
    root = tmp_path / "images"
    (root / "coco").mkdir(parents=True)
    for i, p in enumerate(JPEGS[:3]):
        (root / "coco" / f"{i}.jpg").write_bytes(p.read_bytes())
    elements = [{"id": f"{i:06d}", "image": f"coco/{i}.jpg",
                 "conversations": [{"from": "human", "value": f"<image>\nWhat is {i}? [a] {{b}} \"c\\\" ]"},
                                   {"from": "gpt", "value": "It is."}]} for i in range(3)]
    text = json.dumps(elements[:2] + ["a string", 7] + elements[2:], indent=1)
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "mix.json"
    src.write_text("\ufeff" + text)
    r = run(sluice, src, tmp_path / "o", "--dry-run", "--image-root", str(root) + "/")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert set(rows) == {"000000", "000001", "000002", "mix.json:3", "mix.json:4"}
    for i in range(3):
        row = rows[f"{i:06d}"]
        assert row["error"] is None and row["path"] == str(root / "coco" / f"{i}.jpg")
        assert row["conversations"] == elements[i]["conversations"]
    assert "mix.json:3" in rows["mix.json:3"]["error"] and rows["mix.json:3"]["error_stage"] == "read"

    # Without --image-root, relative paths are under the manifest's folder: not found there.
    r = run(sluice, src, tmp_path / "o2", "--dry-run")
    assert r.returncode == 3
    assert all(row["error"] for row in jsonl_rows(tmp_path / "o2"))

    # Compressed, cut inside the last element.
    cut = json.dumps(elements)
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(cut[:-40].encode()))
    r = run(sluice, tmp_path / "cut.json.gz", tmp_path / "o3", "--dry-run", "--image-root", root)
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o3"))
    assert set(rows) == {"000000", "000001", "cut.json.gz"}
    assert "ends inside element 3" in rows["cut.json.gz"]["error"]

    (tmp_path / "obj.json").write_text('{"image": "a.jpg"}')
    r = run(sluice, tmp_path / "obj.json", tmp_path / "o4", "--dry-run")
    assert r.returncode == 3
    assert "holds one JSON array of objects" in jsonl_rows(tmp_path / "o4")[0]["error"]

    r = run(sluice, src, tmp_path / "o5", "--dry-run", "--image-root", tmp_path / "nowhere")
    assert r.returncode == 2 and "--image-root" in r.stderr and "nowhere" in r.stderr

    # Another name: --input-format json says what it holds.
    other = tmp_path / "data" / "mix.txt"
    other.write_text(text)
    r = run(sluice, other, tmp_path / "o7", "--dry-run", "--image-root", root, "--input-format", "json")
    assert r.returncode == 3, r.stderr
    assert {row["id"] for row in jsonl_rows(tmp_path / "o7")} == {"000000", "000001", "000002", "mix.txt:3",
                                                                  "mix.txt:4"}

    # Many elements over many 64 KiB reads: strings with brackets, braces,
    # escaped quotes and backslashes cross the read boundaries.
    many = [{"id": f"m{k}", "image": f"coco/{k % 3}.jpg",
             "conversations": [{"from": "human", "value": "]}[{\\\"," * (k % 50) + f"<image> {k}"}]}
            for k in range(3000)]
    big = tmp_path / "data" / "many.json"
    big.write_text(json.dumps(many))
    assert big.stat().st_size > 10 * 65536
    r = run(sluice, big, tmp_path / "o6", "--dry-run", "--image-root", root)
    assert r.returncode == 0, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o6"))
    assert len(rows) == 3000
    assert all(rows[e["id"]]["conversations"] == e["conversations"] for e in many)


def test_imagefolder_metadata_and_laion_parquet_need_no_image_column(sluice, http_root, tmp_path):
    """A Hugging Face ImageFolder's train/metadata.jsonl (and .csv) names its
    images in `file_name`, beside the file; LAION's Parquet in `URL`: both
    found without --image-column."""
    d = tmp_path / "train"
    d.mkdir()
    for i, p in enumerate(JPEGS[:2]):
        (d / f"{i}.jpg").write_bytes(p.read_bytes())
    (d / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.jpg", "text": f"t{i}"}) + "\n"
                                              for i in range(2)))
    (d / "metadata.csv").write_text("file_name,text\n0.jpg,t0\n1.jpg,t1\n")
    for name in ("metadata.jsonl", "metadata.csv"):
        r = run(sluice, d / name, tmp_path / f"o-{name}", "--dry-run")
        assert r.returncode == 0, r.stderr
        rows = jsonl_rows(tmp_path / f"o-{name}")
        assert sorted((row["path"], row["text"]) for row in rows) == [(str(d / "0.jpg"), "t0"),
                                                                       (str(d / "1.jpg"), "t1")]
    root, base = http_root
    (root / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    pq.write_table(pa.table({"SAMPLE_ID": [1, 2], "URL": [f"{base}/a.jpg", f"{base}/gone.jpg"],
                             "TEXT": ["a photo", "lost"]}), tmp_path / "laion.parquet")
    r = run(sluice, tmp_path / "laion.parquet", tmp_path / "o-laion", "--dry-run")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o-laion"))
    assert rows["laion.parquet:0"]["error"] is None and rows["laion.parquet:0"]["TEXT"] == "a photo"
    assert "HTTP 404" in rows["laion.parquet:1"]["error"]


def test_compressed_manifests_stream(sluice, tmp_path):
    """A .jsonl.gz, .jsonl.zst, .ndjson.bz2, .jsonl.xz and .csv.gz read as
    their plain forms (ids FILE:LINE of the decompressed lines); a file cut
    short gives its rows up to the cut and one failed row naming the cause;
    a name promising a compression its bytes lack fails that input alone."""
    import bz2
    import gzip
    import lzma
    imgs = JPEGS[:3]
    lines = [json.dumps({"image": str(p), "n": i}) for i, p in enumerate(imgs)] + ["not json"]
    text = ("\n".join(lines) + "\n").encode()
    packed = {"m.jsonl.gz": gzip.compress(text), "m.jsonl.zst": pa.compress(text, "zstd", asbytes=True),
              "m.ndjson.bz2": bz2.compress(text), "m.jsonl.xz": lzma.compress(text)}
    for name, data in packed.items():
        (tmp_path / name).write_bytes(data)
        r = run(sluice, tmp_path / name, tmp_path / f"out-{name}", "--dry-run")
        assert r.returncode == 3, (name, r.stderr)
        rows = by_id(jsonl_rows(tmp_path / f"out-{name}"))
        assert set(rows) == {f"{name}:{k}" for k in range(1, 5)}, (name, set(rows))
        assert [rows[f"{name}:{k}"]["n"] for k in range(1, 4)] == [0, 1, 2]
        assert "invalid JSON" in rows[f"{name}:4"]["error"]
    csv_text = "image,tag\n" + "".join(f"{p},t{i}\n" for i, p in enumerate(imgs))
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(csv_text.encode()))
    r = run(sluice, tmp_path / "c.csv.gz", tmp_path / "out-csv", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert sorted(row["tag"] for row in jsonl_rows(tmp_path / "out-csv")) == ["t0", "t1", "t2"]

    # Many lines, cut in the middle of the gzip stream.
    big = "".join(json.dumps({"image": str(imgs[i % 3]), "k": i}) + "\n" for i in range(40000)).encode()
    whole = gzip.compress(big)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    r = run(sluice, tmp_path / "cut.jsonl.gz", tmp_path / "out-cut", "--dry-run")
    assert r.returncode == 3, r.stderr
    rows = jsonl_rows(tmp_path / "out-cut")
    failed = [row for row in rows if row["error"]]
    assert len(failed) == 1 and "cut.jsonl.gz" in failed[0]["error"] and "truncated" in failed[0]["error"]
    assert 1000 < len(rows) - 1 < 40000
    assert sorted(row["k"] for row in rows if not row["error"]) == list(range(len(rows) - 1))

    (tmp_path / "plain.jsonl.gz").write_bytes(text)
    r = run(sluice, tmp_path / "plain.jsonl.gz", tmp_path / "out-plain", "--dry-run")
    assert r.returncode == 3, r.stderr
    [row] = jsonl_rows(tmp_path / "out-plain")
    assert row["id"] == "plain.jsonl.gz" and "named .gz, but its bytes are not compressed" in row["error"]


def test_a_cut_compressed_manifest_keeps_every_line_its_decoder_has(sluice, tmp_path):
    """A .jsonl.gz, .jsonl.xz or .jsonl.bz2 cut short gives a row for every
    whole line its decoder (Python's, streaming) makes of the bytes there
    are, then one failed row naming the cause: libarchive's filters held back
    the block they were filling, ~500 lines of a gzip here. A damaged gzip
    gives the lines before the damage; gzip members one after another (pigz)
    read as one, zero padding after them is no data, and the bytes, not the
    name, say the compression."""
    import bz2
    import gzip
    import lzma
    import zlib
    img = str(SAMPLES / "variants" / "chelsea_thumb48.jpg")  # the smallest: decoding is not tested here
    text = "".join(json.dumps({"image": img, "k": i, "pad": "x" * (i % 37)}) + "\n"
                   for i in range(20000)).encode()

    def whole_lines(partial):
        return partial.count(b"\n")

    def check(name, data, expect_lines, cause):
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"out-{name}"
        r = run(sluice, tmp_path / name, out, "--dry-run")
        assert r.returncode == 3, (name, r.stderr)
        rows = jsonl_rows(out)
        failed = [row for row in rows if row["error"]]
        assert len(failed) == 1 and failed[0]["id"] == name, (name, failed)
        assert cause in failed[0]["error"] and name in failed[0]["error"], failed[0]["error"]
        assert sorted(row["k"] for row in rows if not row["error"]) == list(range(expect_lines)), name

    gz = gzip.compress(text, compresslevel=1)
    cut = gz[:len(gz) * 6 // 10]
    check("cut.jsonl.gz", cut, whole_lines(zlib.decompressobj(31).decompress(cut)), "truncated gzip input")
    xz = lzma.compress(text, preset=1)
    cut = xz[:len(xz) * 6 // 10]
    check("cut.jsonl.xz", cut, whole_lines(lzma.LZMADecompressor().decompress(cut)), "truncated xz input")
    # bzip2 decodes a block only whole: two blocks (-1: 100 kB each), cut in the second.
    bz = bz2.compress(text, compresslevel=1)
    cut = bz[:len(bz) * 8 // 10]
    lines = whole_lines(bz2.BZ2Decompressor().decompress(cut))
    assert lines > 1000
    check("cut.jsonl.bz2", cut, lines, "truncated bzip2 input")
    # A byte changed in the middle: every line whole before it, then the damage
    # named (what the decoder makes of the bytes after it may be garbage lines,
    # failed as such).
    damaged = bytearray(gz)
    damaged[len(gz) // 2] ^= 0xFF
    before = whole_lines(zlib.decompressobj(31).decompress(gz[:len(gz) // 2]))
    assert before > 1000
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(damaged))
    r = run(sluice, tmp_path / "bad.jsonl.gz", tmp_path / "out-bad", "--dry-run")
    assert r.returncode == 3, r.stderr
    rows = jsonl_rows(tmp_path / "out-bad")
    [failed] = [row for row in rows if row["id"] == "bad.jsonl.gz"]
    assert "gzip data damaged near byte" in failed["error"], failed["error"]
    assert set(range(before)) <= {row["k"] for row in rows if not row["error"]}

    # pigz-style members, then tar-style zero padding; and zstd bytes named .gz.
    half = len(text) // 2
    half = text.index(b"\n", half) + 1
    members = gzip.compress(text[:half]) + gzip.compress(text[half:]) + bytes(512)
    for name, data in (("members.jsonl.gz", members),
                       ("zstd.jsonl.gz", pa.compress(text, "zstd", asbytes=True))):
        (tmp_path / name).write_bytes(data)
        r = run(sluice, tmp_path / name, tmp_path / f"out-{name}", "--dry-run")
        assert r.returncode == 0, (name, r.stderr)
        assert sorted(row["k"] for row in jsonl_rows(tmp_path / f"out-{name}")) == list(range(20000))


@pytest.mark.parametrize("fmt, said", [("parquet", "has it null in every row"),
                                       ("jsonl", "leaves it out")])
def test_a_columns_name_no_row_holds_is_warned_of(sluice, tmp_path, fmt, said):
    """--columns with a misspelt name (`lable` for a Parquet input's
    `label`) gave a column of nulls (Parquet) or none (JSONL) without a
    word; the end of the run names it. A column whose values are all null,
    and a struct's field by its dotted path, are held: not warned of."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"image": [p.read_bytes() for p in JPEGS[:2]],
                             "label": ["cat", "dog"], "note": pa.array([None, None], pa.string()),
                             "meta": [{"src": "a"}, {"src": "b"}]}), data)
    out = tmp_path / "o"
    r = run(sluice, data, out, "--columns", "lable,label,note,meta.src", "--format", fmt)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "--columns '" in line]
    assert warned == [f"sluice: warn: --columns 'lable': none of the 2 rows written held a column "
                      f"of that name (nor a struct field at that path), so the output {said}: "
                      "check the name against the input's columns"], r.stderr
    if fmt == "parquet":
        t = pq.read_table(out)
        assert t.column("lable").to_pylist() == [None, None]
        assert sorted(t.column("label").to_pylist()) == ["cat", "dog"]


def test_a_prompt_column_no_row_holds_is_warned_of(sluice, tmp_path):
    """--prompt-column with a misspelt name (`questoin` for `question`)
    prompted every row with --prompt without a word. A name none of the
    first 64 rows holds is said as the run goes (a long run can be
    stopped), the end of the run says how many rows missed it, mixed
    manifests included, and _summary.json counts them. Without
    --prompt-column nothing is said: a manifest need not hold prompts."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"image": [p.read_bytes() for p in JPEGS[:2]],
                             "question": ["Who?", "What?"]}), data)

    def said(r):
        return [line for line in r.stderr.splitlines() if "--prompt-column" in line]

    def missed(out):
        return json.loads((out / "_summary.json").read_text())["rows"].get("without_prompt_column")

    r = run(sluice, data, tmp_path / "typo", "--prompt-column", "questoin")
    assert r.returncode == 0, r.stderr
    assert said(r) == ["sluice: warn: --prompt-column 'questoin': none of the 2 rows read held a "
                       "column of that name (nor a struct field at that path), so every one was "
                       "prompted with --prompt: check the name against the input's columns"]
    assert missed(tmp_path / "typo") == 2

    r = run(sluice, data, tmp_path / "right", "--prompt-column", "question")
    assert r.returncode == 0 and said(r) == [], r.stderr
    assert missed(tmp_path / "right") == 0
    r = run(sluice, data, tmp_path / "none")
    assert r.returncode == 0 and said(r) == [], r.stderr
    assert missed(tmp_path / "none") is None

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"image": str(JPEGS[0]), "question": "Who?"}) + "\n" +
                     json.dumps({"image": str(JPEGS[1])}) + "\n")
    r = run(sluice, mixed, tmp_path / "mixed", "--prompt-column", "question")
    assert r.returncode == 0, r.stderr
    assert said(r) == ["sluice: warn: --prompt-column 'question': 1 of the 2 rows read had no "
                       "column of that name: it was prompted with --prompt"]
    assert missed(tmp_path / "mixed") == 1

    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({"image": str(JPEGS[i % 2]), "q": "Who?"}) + "\n"
                            for i in range(70)))
    r = run(sluice, many, tmp_path / "many", "--prompt-column", "question", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert said(r)[0] == ("sluice: warn: --prompt-column 'question': none of the first 64 rows "
                          "read holds a column of that name (nor a struct field at that path), "
                          "so they are prompted with --prompt: check the name against the "
                          "input's columns")
    assert "none of the 70 rows read held" in said(r)[1] and len(said(r)) == 2, r.stderr
    assert missed(tmp_path / "many") == 70

def test_csv_manifest_quoting_and_declared_columns(sluice, tmp_path):
    manifest = tmp_path / "list.csv"
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    w.writerow(["url", "title", "split"])
    w.writerow([str(JPEGS[0]), 'a "quoted", comma title', "train"])
    w.writerow([str(JPEGS[1]), "two\nlines", "val"])
    text = buf.getvalue() + "only,two\r\n" + f'{JPEGS[2]},"bad"quote,x\r\n' + f"{JPEGS[3]},plain,test\r\n"
    manifest.write_text(text, encoding="utf-8")
    r = run(sluice, manifest, tmp_path / "o", "--columns", "split,title")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert set(rows) == {"list.csv:2", "list.csv:3", "list.csv:5", "list.csv:6", "list.csv:7"}
    assert rows["list.csv:2"]["title"] == 'a "quoted", comma title'
    assert rows["list.csv:2"]["split"] == "train" and rows["list.csv:2"]["error"] is None
    assert rows["list.csv:3"]["title"] == "two\nlines"
    assert list(rows["list.csv:3"])[-2:] == ["split", "title"]  # declared order
    assert "2 fields where the header has 3" in rows["list.csv:5"]["error"]
    assert "list.csv:5" in rows["list.csv:5"]["error"]
    assert "quote" in rows["list.csv:6"]["error"] and rows["list.csv:6"]["error_stage"] == "read"
    assert rows["list.csv:7"]["split"] == "test" and rows["list.csv:7"]["error"] is None
    assert "url" not in rows["list.csv:7"]


def test_manifests_from_windows_tools_and_spreadsheets(sluice, tmp_path):
    """A UTF-8 byte order mark opening a CSV, JSONL or JSON manifest, plain
    or compressed, is skipped (as utf-8-sig, pandas and DuckDB skip it); a
    line end inside a quoted CSV field keeps its bytes (CRLF stays CRLF, as
    Python's csv reads it); a repeated header name gets DuckDB's suffixes
    (its read_csv names the same columns); an empty image cell fails its row
    naming FILE:LINE and the column."""
    import gzip
    bom = b"\xef\xbb\xbf"
    img = JPEGS[0]
    text = (f"image,label,note,label,label_1,label\r\n"
            f'{img},first,"crlf\r\ninside",second,third,fourth\r\n'
            f",empty,x,a,b,c\r\n").encode()
    (tmp_path / "m.csv").write_bytes(bom + text)
    (tmp_path / "m.csv.gz").write_bytes(gzip.compress(bom + text))
    jsonl = (json.dumps({"image": str(img), "n": 1}) + "\n" + json.dumps({"image": "", "n": 2})
             + "\n").encode()
    (tmp_path / "m.jsonl").write_bytes(bom + jsonl)
    (tmp_path / "m.jsonl.zst").write_bytes(pa.compress(bom + jsonl, "zstd", asbytes=True))
    (tmp_path / "m.json").write_bytes(bom + json.dumps([{"image": str(img), "n": 1}]).encode())
    columns = duckdb.sql(f"select * from read_csv('{tmp_path / 'm.csv'}', header=true)").columns
    assert columns == ["image", "label", "note", "label_1", "label_1_1", "label_2"]
    with open(tmp_path / "m.csv", newline="", encoding="utf-8-sig") as f:
        assert list(csv.reader(f))[1][2] == "crlf\r\ninside"

    for name in ("m.csv", "m.csv.gz"):
        r = run(sluice, tmp_path / name, tmp_path / f"o-{name}", "--dry-run")
        assert r.returncode == 3, (name, r.stderr)
        rows = by_id(jsonl_rows(tmp_path / f"o-{name}"))
        ok, empty = rows[f"{name}:2"], rows[f"{name}:4"]
        assert ok["error"] is None and ok["path"] == str(img), (name, ok)
        assert [ok[c] for c in columns[1:]] == ["first", "crlf\r\ninside", "second", "third",
                                                "fourth"]
        assert empty["error"] == f"{tmp_path / name}:4: column 'image' is empty: no image path or URL"
        assert empty["label"] == "empty"
    for name in ("m.jsonl", "m.jsonl.zst"):
        r = run(sluice, tmp_path / name, tmp_path / f"o-{name}", "--dry-run")
        assert r.returncode == 3, (name, r.stderr)
        rows = by_id(jsonl_rows(tmp_path / f"o-{name}"))
        assert rows[f"{name}:1"]["error"] is None and rows[f"{name}:1"]["n"] == 1, (name, rows)
        assert rows[f"{name}:2"]["error"] == (f"{tmp_path / name}:2: column 'image' is empty: "
                                              "no image path or URL")
    r = run(sluice, tmp_path / "m.json", tmp_path / "o-json", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert [row["n"] for row in jsonl_rows(tmp_path / "o-json")] == [1]


def test_manifest_numbers_past_int64_and_double_are_read(sluice, tmp_path):
    """Valid JSON numbers no int64 or double holds (a 64-bit perceptual
    hash, 1e400) and the NaN and Infinity Python's json.dumps writes used
    to fail the row as invalid JSON, its image never captioned: an integer
    past int64 is a double (as an Arrow uint64 past 2^63 is), a real past
    double, NaN and the infinities are null; a string of the same text and
    the row's other numbers are untouched. In a manifest and a WebDataset
    sample's .json sidecar."""
    img = JPEGS[0]
    path = json.dumps(str(img))
    phashes = ["18446744073709551615", "9223372036854775807", "-9223372036854775809",
               '"text 18446744073709551615"', '[1e400, -1e400, 2.5e-400, "1e400"]',
               '{"s": NaN, "t": [Infinity, -Infinity, 1.5], "u": "NaN Infinity"}']
    text = "\n".join(f'{{"image": {path}, "phash": {p}, "n": {7 + k}}}' for k, p in enumerate(phashes))
    (tmp_path / "m.jsonl").write_text(text + "\n")
    want = {1: 18446744073709551615.0, 2: 9223372036854775807, 3: -9223372036854775809.0,
            4: "text 18446744073709551615", 5: [None, None, 0.0, "1e400"],
            6: {"s": None, "t": [None, None, 1.5], "u": "NaN Infinity"}}
    r = run(sluice, tmp_path / "m.jsonl", tmp_path / "o", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert len(rows) == 6
    for line, value in want.items():
        row = rows[f"m.jsonl:{line}"]
        assert row["error"] is None and row["caption"], row
        assert row["phash"] == value and row["n"] == 6 + line, row
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "a.jpg", img.read_bytes())
        add(tar, "a.json", b'{"phash": 18446744073709551615, "ok": true, "score": NaN}')
    r = run(sluice, shard, tmp_path / "w", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    (row,) = jsonl_rows(tmp_path / "w")
    assert row["error"] is None and row["phash"] == 18446744073709551615.0 and row["ok"] is True, row
    assert row["score"] is None, row


def test_a_null_image_column_gives_way_to_the_next_with_a_value(sluice, tmp_path):
    """A JSONL row whose `image` is null beside a `file_name` (a merged
    metadata file) failed "column 'image' is not a string": the default
    image column is the first of the list with a value; a row where all
    are null fails saying so, naming FILE:LINE and the column."""
    img = JPEGS[0]
    lines = [{"image": None, "file_name": str(img)}, {"image": str(img), "file_name": None},
             {"image": None, "url": None}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    r = run(sluice, tmp_path / "m.jsonl", tmp_path / "o")
    assert r.returncode == 3, r.stderr  # the third row fails
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert rows["m.jsonl:1"]["error"] is None and rows["m.jsonl:1"]["caption"], rows["m.jsonl:1"]
    assert rows["m.jsonl:2"]["error"] is None and rows["m.jsonl:2"]["caption"], rows["m.jsonl:2"]
    assert rows["m.jsonl:3"]["error"] == f"{tmp_path / 'm.jsonl'}:3: column 'image' is null: no image path or URL"


def test_parquet_values_its_columns_cannot_hold_are_counted_and_typed_columns_keep_them(sluice, tmp_path):
    """Parquet's pass-through columns are typed from the first 100 rows; a
    later value of another type, a key the struct lacks and a column first
    seen later are not written: each column's are counted in _summary.json
    (the first row named, and logged once), not lost in silence. Declared
    with --columns NAME:TYPE (a shape's commas inside it), the columns hold
    them, and nothing is counted."""
    lines = [{"image": str(JPEGS[i % 4]), "n": i, "meta": {"a": i}} for i in range(100)]
    lines += [{"image": str(JPEGS[0]), "n": "x", "meta": {"a": 1}},
              {"image": str(JPEGS[1]), "n": 5, "meta": {"a": 2, "b": 3}},
              {"image": str(JPEGS[2]), "n": 6, "meta": None, "late": "new"},
              {"image": str(JPEGS[3]), "n": 7, "meta": {"a": "s", "b": 4}}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(l) + "\n" for l in lines))
    r = run(sluice, manifest, tmp_path / "p", "--format", "parquet", "--ordered")
    assert r.returncode == 0, r.stderr
    unfit = json.loads((tmp_path / "p" / "_summary.json").read_text())["unfit_values"]
    assert unfit == {
        "n": {"rows": 1, "first_id": "m.jsonl:101", "why": "a string where it holds int64"},
        "meta": {"rows": 2, "first_id": "m.jsonl:102", "why": "key 'b' is not one of its struct's 1 fields"},
        "late": {"rows": 1, "first_id": "m.jsonl:103", "why": unfit["late"]["why"]},
    }, unfit
    assert "first seen after" in unfit["late"]["why"]
    assert r.stderr.count("column 'meta'") == 1 and "meta:string keeps any value" in r.stderr
    prom = (tmp_path / "p" / "_metrics.prom").read_text()  # the same counts, live in /metrics
    assert 'sluice_output_unfit_values_total{column="meta"} 2' in prom
    assert 'sluice_output_unfit_values_total{column="late"} 1' in prom
    rows = by_id(pq.read_table(tmp_path / "p" / "part-00000.parquet").to_pylist())
    assert rows["m.jsonl:101"]["n"] is None and rows["m.jsonl:102"]["meta"] == {"a": 2}
    assert rows["m.jsonl:104"]["meta"] == {"a": None} and "late" not in rows["m.jsonl:103"]

    shape = '{"struct": [["a", "string"], ["b", "int64"]]}'
    r = run(sluice, manifest, tmp_path / "t", "--format", "parquet", "--columns", f"n:string, meta:{shape},late:string")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "t" / "_summary.json").read_text())["unfit_values"] == {}
    table = pq.read_table(tmp_path / "t" / "part-00000.parquet")
    types = {f.name: str(f.type) for f in table.schema}
    assert (types["n"], types["meta"], types["late"]) == ("string", "struct<a: string, b: int64>", "string")
    rows = by_id(table.to_pylist())
    assert rows["m.jsonl:1"]["n"] == "0" and rows["m.jsonl:101"]["n"] == "x"
    assert rows["m.jsonl:102"]["meta"] == {"a": "2", "b": 3} and rows["m.jsonl:104"]["meta"] == {"a": "s", "b": 4}
    assert rows["m.jsonl:103"]["late"] == "new" and rows["m.jsonl:1"]["late"] is None

    r = run(sluice, manifest, tmp_path / "bad", "--columns", 'n:{"list": "int32"}')
    assert r.returncode == 2 and "'n:{\"list\": \"int32\"}'" in r.stderr and "int32" in r.stderr, r.stderr


def test_parquet_objects_of_many_keys_are_maps_read_back_by_retry(sluice, tmp_path):
    """An object column whose rows have more keys in all than a struct takes
    (64), or a key no field can be named (""), is a
    map<string, V> (V its values widened as a list's elements), as pyarrow
    and DuckDB read and query it: an empty object an empty map, null null;
    a key with a '.' names a struct's field like any other (boxes).
    --retry-failed rewrites a part's maps and structs as they were. A column declared
    {"map": ...} is one whatever its keys. A column named "" is input_."""
    exif = [{f"k{i * 20 + j}": j * (i + 1) for j in range(20)} for i in range(5)] + [{}, None]
    attrs = [{"a.b": i, "c": [i]} for i in range(5)] + [{"": "empty key"}, {}]
    lines = [{"image": str(JPEGS[i % 4]) if i < 6 else "missing.jpg", "exif": exif[i], "attrs": attrs[i],
              "boxes": [{"x.y": i}, {}], "scores": {"cat": 0.5, "dog": i}} for i in range(7)]
    lines.append({"image": str(JPEGS[0]), "exif": {"k1": 2}, "attrs": None, "boxes": [], "scores": {"bird": 1.5},
                  "": "a column without a name"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(l) + "\n" for l in lines))
    r = run(sluice, manifest, tmp_path / "p", "--format", "parquet")
    assert r.returncode == 3, r.stderr
    part = tmp_path / "p" / "part-00000.parquet"

    def check(table, ids):
        types = {f.name: str(f.type) for f in table.schema}
        assert types["exif"].startswith("map<string, int64")
        assert types["attrs"].startswith("map<string, string")  # ints and lists: their JSON text
        assert types["boxes"] == "list<element: struct<x.y: int64>>"
        assert types["scores"] == "struct<cat: double, dog: int64, bird: double>"  # few keys: a struct
        rows = by_id(table.to_pylist())
        assert set(rows) == ids
        for i in range(8):
            row = rows.get(f"m.jsonl:{i + 1}")
            if row is None:
                continue
            want = lines[i]
            assert (None if row["exif"] is None else dict(row["exif"])) == want["exif"], i
            attrs = None if want["attrs"] is None else {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                                                        for k, v in want["attrs"].items()}
            assert (None if row["attrs"] is None else dict(row["attrs"])) == attrs, i
            assert row["boxes"] == [{"x.y": b.get("x.y")} for b in want["boxes"]], i

    check(pq.read_table(part), {f"m.jsonl:{i}" for i in range(1, 9)})
    # A Parquet column needs a name: "" is written as input_ (in JSONL too).
    assert by_id(pq.read_table(part).to_pylist())["m.jsonl:8"]["input_"] == "a column without a name"
    summary = json.loads((tmp_path / "p" / "_summary.json").read_text())
    assert {"name": "exif", "type": {"map": "int64"}} in summary["columns"]
    assert summary["unfit_values"] == {}
    got = duckdb.connect().execute(f"select id, exif['k21'], cardinality(exif) from '{part}' order by id").fetchall()
    assert got[1] == ("m.jsonl:2", 2, 20) and got[5] == ("m.jsonl:6", None, 0) and got[6][2] is None

    r = run(sluice, manifest, tmp_path / "p", "--format", "parquet", "--retry-failed")
    assert r.returncode == 3, r.stderr  # missing.jpg fails again
    check(pq.read_table(part), {f"m.jsonl:{i}" for i in range(1, 9)} - {"m.jsonl:7"})
    check(pq.read_table(tmp_path / "p" / "part-00001.parquet"), {"m.jsonl:7"})

    r = run(sluice, manifest, tmp_path / "d", "--format", "parquet", "--columns", 'scores:{"map": "double"}')
    assert r.returncode == 3, r.stderr
    table = pq.read_table(tmp_path / "d" / "part-00000.parquet")
    assert str(table.schema.field("scores").type).startswith("map<string, double")
    assert dict(by_id(table.to_pylist())["m.jsonl:8"]["scores"]) == {"bird": 1.5}
    assert json.loads((tmp_path / "d" / "_summary.json").read_text())["unfit_values"] == {}


# ---- WebDataset ----------------------------------------------------------------------


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_shards(root: pathlib.Path, n_shards=3, per_shard=2):
    root.mkdir(parents=True, exist_ok=True)
    expect = {}
    k = 0
    for s in range(n_shards):
        with tarfile.open(root / f"data-{s:03d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(per_shard):
                img = JPEGS[k % len(JPEGS)]
                key = f"sample{k:04d}"
                add(tar, f"{key}.jpg", img.read_bytes())
                add(tar, f"{key}.json", json.dumps({"source": img.name, "n": k}).encode())
                add(tar, f"{key}.txt", f"alt text {k}".encode())
                add(tar, f"{key}.cls", str(k % 3).encode())
                expect[f"data-{s:03d}.tar/{key}"] = (img, k)
                k += 1
    return expect


def test_webdataset_shards_by_brace_list(sluice, tmp_path):
    expect = make_shards(tmp_path / "wds")
    # A sample with no image, in a fourth shard not named by the braces.
    with tarfile.open(tmp_path / "wds" / "data-003.tar", "w") as tar:
        add(tar, "lonely.json", b"{}")
    r = run(sluice, str(tmp_path / "wds" / "data-{000..002}.tar"), tmp_path / "o", "--format",
            "parquet", "--include-image-bytes")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(tmp_path / "o" / "part-00000.parquet").to_pylist()
    rows = by_id(table)
    assert set(rows) == set(expect)
    for rid, (img, k) in expect.items():
        row = rows[rid]
        assert row["error"] is None and row["caption"]
        assert row["source"] == img.name and row["n"] == k
        assert row["txt"] == f"alt text {k}" and row["cls"] == k % 3
        assert row["image_bytes"] == img.read_bytes()
        assert row["path"] is None
    r = run(sluice, [str(tmp_path / "wds" / "data-00[03].tar")], tmp_path / "o2")
    rows = by_id(jsonl_rows(tmp_path / "o2"))
    assert r.returncode == 3, r.stderr
    assert "has no image" in rows["data-003.tar/lonely"]["error"]
    assert len(rows) == 3


def test_a_hard_link_member_fails_its_sample_naming_the_target(sluice, tmp_path):
    """A hard link in a tar (type '1', as tar writes a second name of the
    same file) has no data of its own: its bytes are the earlier member's.
    It was read as an empty image ("not an image", 0 bytes) or an empty
    .json. The reader goes front to back holding one sample, so it cannot
    go back for the target's data: the sample fails naming the link and
    its target. A member with data of its own, after it, still reads."""
    img = JPEGS[0].read_bytes()
    shard = tmp_path / "links.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, "a.jpg", img)
        add(tar, "a.json", b'{"n": 1}')
        for name, target in (("b.jpg", "a.jpg"), ("c.json", "a.json")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
        add(tar, "c.jpg", img)
        add(tar, "d.jpg", img)
    with tarfile.open(shard) as tar:
        assert [m.islnk() for m in tar.getmembers()] == [False, False, True, True, False, False]
    r = run(sluice, shard, tmp_path / "o", "--dry-run")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert sorted(rows) == ["links.tar/a", "links.tar/b", "links.tar/c", "links.tar/d"]
    assert rows["links.tar/a"]["error"] is None and rows["links.tar/a"]["n"] == 1
    assert rows["links.tar/d"]["error"] is None
    for key, link, target in (("b", "b.jpg", "a.jpg"), ("c", "c.json", "a.json")):
        err = rows[f"links.tar/{key}"]["error"]
        assert f"{link}: a hard link to {target} inside the tar" in err, err
        assert str(shard) in err, err


def test_compressed_webdataset_shards(sluice, tmp_path):
    """A shard gzipped, zstd-, bzip2- or xz-compressed (.tar.gz, .tar.zst,
    .tar.bz2, .tar.xz) reads as the plain one does, ids named by the file."""
    import bz2
    import gzip
    import lzma
    expect = make_shards(tmp_path / "wds", n_shards=1, per_shard=3)
    raw = (tmp_path / "wds" / "data-000.tar").read_bytes()
    packed = {".tar.gz": gzip.compress(raw), ".tar.zst": pa.compress(raw, "zstd", asbytes=True),
              ".tar.bz2": bz2.compress(raw), ".tar.xz": lzma.compress(raw)}
    for suffix, data in packed.items():
        (tmp_path / f"s{suffix}").write_bytes(data)
        r = run(sluice, tmp_path / f"s{suffix}", tmp_path / f"o{suffix}", "--dry-run")
        assert r.returncode == 0, (suffix, r.stderr)
        rows = by_id(jsonl_rows(tmp_path / f"o{suffix}"))
        assert set(rows) == {rid.replace("data-000.tar", f"s{suffix}") for rid in expect}, (suffix, set(rows))
        assert sorted(row["n"] for row in rows.values()) == [0, 1, 2]


@pytest.mark.parametrize("kind,where", [("gz", "data"), ("gz", "header"), ("xz", "data")])
def test_a_truncated_tar_gz_keeps_every_complete_sample_before_the_cut(sluice, tmp_path, kind, where):
    """A .tar.gz or .tar.xz cut short (a copy that did not finish), inside a
    member's data or inside a header: every sample whose members all inflate
    from what is there is captioned with all its columns, those in the last
    64 KiB before the cut too (libarchive's filters dropped that block), and
    one failed row, id SHARD@OFFSET of the member cut, names the shard, that
    offset and the truncation."""
    import gzip
    import lzma
    import zlib
    make_shards(tmp_path / "wds", n_shards=1, per_shard=10)
    raw = (tmp_path / "wds" / "data-000.tar").read_bytes()
    packed = gzip.compress(raw, mtime=0) if kind == "gz" else lzma.compress(raw, preset=1)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    # (compressed prefix, tar bytes it inflates to), every 16 bytes
    d = zlib.decompressobj(16 + 15) if kind == "gz" else lzma.LZMADecompressor()
    reach, prefixes = 0, []
    for i in range(0, len(packed), 16):
        reach += len(d.decompress(packed[i:i + 16]))
        prefixes.append((i + 16, reach))
    first = {}
    for m in members:
        first.setdefault(m.name.split(".")[0], m.offset)
    if where == "data":
        # inside a member's data, with a whole sample in the 64 KiB before
        def fits(reach):
            m = next(m for m in members if m.offset_data + m.size > reach)
            return m.offset_data < reach and any(reach - (64 << 10) < off < m.offset
                                                 for off in first.values())
    else:
        def fits(reach):
            return any(m.offset < reach < m.offset + 512 and not m.name.endswith(".jpg")
                       for m in members)
    cut, reached = next((c, r) for c, r in prefixes if r > len(raw) // 2 and fits(r))
    broken = next(m for m in members if m.offset_data + m.size > reached)
    shard = tmp_path / f"cut.tar.{kind}"
    shard.write_bytes(packed[:cut])
    r = run(sluice, shard, tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    ok = {k: v for k, v in rows.items() if v["error"] is None}
    # A cut in a header cannot tell whether the sample before it had more
    # members: it is kept with those it has.
    expect = {key for key, off in first.items()
              if off < broken.offset and (where == "header" or key != broken.name.split(".")[0])}
    assert set(ok) == {f"cut.tar.{kind}/{key}" for key in expect}, (sorted(ok), sorted(expect))
    for key in expect:
        row = ok[f"cut.tar.{kind}/{key}"]
        assert row["caption"], row
        if key != broken.name.split(".")[0]:
            assert row["n"] == int(key[-4:]) and row["txt"] and row["cls"] is not None, row
    failed = [v for v in rows.values() if v["error"]]
    assert len(failed) == 1, failed
    assert failed[0]["id"] == f"cut.tar.{kind}@{broken.offset}", failed[0]["id"]
    err = failed[0]["error"]
    assert str(shard) in err and f"byte {broken.offset}" in err and f"truncated {'gzip' if kind == 'gz' else 'xz'} input" in err, err
    if where == "data":
        assert broken.name in err, err


def test_tar_with_a_bad_header_fails_the_rest_of_that_shard_only(sluice, tmp_path):
    make_shards(tmp_path / "wds", n_shards=2, per_shard=3)
    shard = tmp_path / "wds" / "data-000.tar"
    raw = bytearray(shard.read_bytes())
    # Find the header of the second sample's image and break its checksum.
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    bad = next(m for m in members if m.name == "sample0001.jpg")
    raw[bad.offset + 148: bad.offset + 156] = b"XXXXXXX\0"
    shard.write_bytes(bytes(raw))
    r = run(sluice, str(tmp_path / "wds" / "*.tar"), tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    ok = {k for k, v in rows.items() if v["error"] is None}
    assert ok == {"data-000.tar/sample0000", "data-001.tar/sample0003", "data-001.tar/sample0004",
                  "data-001.tar/sample0005"}
    errors = [v for v in rows.values() if v["error"]]
    assert len(errors) == 1, errors
    assert errors[0]["id"] == f"data-000.tar@{bad.offset}"
    assert str(shard) in errors[0]["error"] and f"byte {bad.offset}" in errors[0]["error"]


# ---- Parquet -----------------------------------------------------------------------------


def hf_table(imgs, start):
    return pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in imgs],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array([start + i for i in range(len(imgs))], pa.int64()),
        "text": pa.array([f"row {start + i}" for i in range(len(imgs))], pa.string()),
        "weight": pa.array([0.5 * i if i % 2 else None for i in range(len(imgs))], pa.float64()),
    })


def test_parquet_input_columns_keep_their_schema_types(sluice, tmp_path):
    """A Parquet input's pass-through columns are typed from its schema, not
    from the first 100 rows' values: a map with one key so far stays a map
    (a later key is kept), a column null in every sampled row keeps its
    double, a list empty so far its int64 elements, a struct field inside a
    list null so far its double, a map of integer keys is a list of
    key/value structs, a struct (a null one too) is a struct of the schema's
    fields; nothing is left out (unfit_values is empty). A type given with
    --columns still wins; a name without one takes the schema's."""
    n = 105
    later = [None] * 100 + [0.25 * i for i in range(n - 100)]
    table = pa.table({
        "image": pa.array([str(JPEGS[i % 4]) for i in range(n)], pa.string()),
        "scores": pa.array([[("cat", 0.5 * i)] if i < 100 else [("dog", 1.5), ("cat", 2.0)] for i in range(n)],
                           pa.map_(pa.string(), pa.float64())),
        "later": pa.array(later, pa.float64()),
        "tags": pa.array([[] if i < 100 else [i, i + 1] for i in range(n)], pa.list_(pa.int32())),
        "meta": pa.array([None if i == 7 else {"a": i, "boxes": [{"x": None if i < 100 else 0.5, "y": i}]}
                          for i in range(n)],
                         pa.struct([("a", pa.int32()), ("boxes", pa.list_(pa.struct([("x", pa.float32()),
                                                                                      ("y", pa.int16())])))])),
        "pairs": pa.array([[(i, f"v{i}")] for i in range(n)], pa.map_(pa.int32(), pa.string())),
        "blob": pa.array([b"\x00"] * n, pa.binary()),
        # Its values are binary, so not read: its pairs are keys alone, an empty map no pairs.
        "bmap": pa.array([[] if i % 2 else [("a", b"\x01")] for i in range(n)], pa.map_(pa.string(), pa.binary())),
        # A field named with a '.' is a struct's field like any other, the
        # column typed from the schema: a key first seen late is kept.
        "dmap": pa.array([[("early", {"p.q": i})] if i < 100 else [("late", {"p.q": i})] for i in range(n)],
                         pa.map_(pa.string(), pa.struct([("p.q", pa.int32())]))),
    })
    src = tmp_path / "typed.parquet"
    pq.write_table(table, src, row_group_size=40)
    r = run(sluice, src, tmp_path / "p", "--format", "parquet", "--ordered")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "p" / "_summary.json").read_text())
    assert summary["unfit_values"] == {}, summary["unfit_values"]
    out = pq.read_table(tmp_path / "p" / "part-00000.parquet")
    types = {f.name: str(f.type) for f in out.schema}
    assert types["scores"].startswith("map<string, double"), types
    assert types["later"] == "double" and types["tags"] == "list<element: int64>", types
    assert types["meta"] == "struct<a: int64, boxes: list<element: struct<x: double, y: int64>>>", types
    assert types["pairs"] == "list<element: struct<key: int64, value: string>>", types
    assert "blob" not in types  # binary columns do not pass through
    assert types["bmap"] == "list<element: struct<key: string>>", types
    assert types["dmap"].startswith("map<string, struct<p.q: int64>"), types
    assert {"name": "scores", "type": {"map": "double"}} in summary["columns"]
    rows = by_id(out.to_pylist())
    last = rows[f"typed.parquet:{n - 1}"]
    assert dict(last["scores"]) == {"dog": 1.5, "cat": 2.0} and last["later"] == 0.25 * (n - 101)
    assert last["tags"] == [n - 1, n] and last["meta"] == {"a": n - 1, "boxes": [{"x": 0.5, "y": n - 1}]}
    assert rows["typed.parquet:7"]["meta"] is None
    assert last["pairs"] == [{"key": n - 1, "value": f"v{n - 1}"}]
    assert last["bmap"] == [{"key": "a"}] and rows[f"typed.parquet:{n - 2}"]["bmap"] == []
    assert last["dmap"] == [("late", {"p.q": n - 1})]
    assert dict(rows["typed.parquet:3"]["scores"]) == {"cat": 1.5} and rows["typed.parquet:3"]["later"] is None
    got = duckdb.connect().execute(f"select sum(later), sum(scores['dog']) from '{tmp_path / 'p' / 'part-00000.parquet'}'")
    assert got.fetchone() == (sum(later[100:]), 1.5 * (n - 100))

    # The user's type beats the schema's; a declared name without one takes it.
    r = run(sluice, src, tmp_path / "d", "--format", "parquet", "--columns", "scores:string,later")
    assert r.returncode == 0, r.stderr
    out = pq.read_table(tmp_path / "d" / "part-00000.parquet")
    assert str(out.schema.field("scores").type) == "string" and str(out.schema.field("later").type) == "double"
    assert "tags" not in out.schema.names
    assert json.loads(by_id(out.to_pylist())[f"typed.parquet:{n - 1}"]["scores"]) == {"dog": 1.5, "cat": 2.0}

    # A declared struct field takes the schema's type of that field (x is
    # null in the first 100 rows: the samples alone would make it a string).
    r = run(sluice, src, tmp_path / "f", "--format", "parquet", "--columns", "meta.boxes")
    assert r.returncode == 0, r.stderr
    out = pq.read_table(tmp_path / "f" / "part-00000.parquet")
    assert str(out.schema.field("meta.boxes").type) == "list<element: struct<x: double, y: int64>>"
    assert by_id(out.to_pylist())[f"typed.parquet:{n - 1}"]["meta.boxes"] == [{"x": 0.5, "y": n - 1}]

    # Files whose schemas differ on a column leave it to the values (int32
    # and double: double), the others keep their type.
    for k, typ in enumerate((pa.int32(), pa.float64())):
        pq.write_table(pa.table({"image": pa.array([str(JPEGS[k])], pa.string()), "x": pa.array([k + 1], typ),
                                 "y": pa.array([None], pa.float32())}), tmp_path / f"two-{k}.parquet")
    r = run(sluice, [tmp_path / "two-0.parquet", tmp_path / "two-1.parquet"], tmp_path / "two", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    out = pq.read_table(tmp_path / "two" / "part-00000.parquet")
    assert str(out.schema.field("x").type) == "double" and str(out.schema.field("y").type) == "double"
    assert sorted(out.column("x").to_pylist()) == [1.0, 2.0]
    assert json.loads((tmp_path / "two" / "_summary.json").read_text())["unfit_values"] == {}


def test_parquet_input_with_the_hf_image_struct(sluice, tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    imgs = JPEGS[:4]
    pq.write_table(hf_table(imgs, 0), d / "train-0.parquet", compression="snappy", row_group_size=2)
    pq.write_table(hf_table(imgs[:3], 100), d / "train-1.parquet", compression="zstd",
                   row_group_size=1, use_dictionary=False)
    # A row with no bytes but a path relative to the file's folder; the
    # image struct's other field keeps its dotted name (the struct is not
    # passed through whole: its image would be written again).
    (d / "rel.jpg").write_bytes(imgs[0].read_bytes())
    pq.write_table(pa.table({
        "image": pa.array([{"bytes": None, "path": "rel.jpg", "width": 64}, {"bytes": None, "path": None, "width": None},
                           # saved without embedding: only the path it had where it was made
                           {"bytes": b"", "path": "gone.jpg", "width": None},
                           {"bytes": None, "path": "/nonexistent/cache/abs.jpg", "width": None}],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string()), ("width", pa.int32())])),
        "label": pa.array([200, 201, 202, 203], pa.int64())}), d / "train-2.parquet")
    truncated = (d / "train-0.parquet").read_bytes()
    (d / "train-3.parquet").write_bytes(truncated[: len(truncated) // 2])

    r = run(sluice, str(d / "train-*.parquet"), tmp_path / "o", "--format", "parquet")
    assert r.returncode == 3, r.stderr
    rows = by_id(pq.read_table(tmp_path / "o" / "part-00000.parquet").to_pylist())
    want_ok = {f"train-0.parquet:{i}" for i in range(4)} | {f"train-1.parquet:{i}" for i in range(3)}
    want_ok.add("train-2.parquet:0")
    assert {k for k, v in rows.items() if v["error"] is None} == want_ok
    assert set(rows) == want_ok | {f"train-2.parquet:{i}" for i in (1, 2, 3)} | {"train-3.parquet"}
    assert rows["train-0.parquet:3"]["label"] == 3 and rows["train-0.parquet:3"]["text"] == "row 3"
    assert rows["train-0.parquet:3"]["weight"] == 1.5 and rows["train-0.parquet:2"]["weight"] is None
    assert rows["train-1.parquet:2"]["label"] == 102
    assert rows["train-2.parquet:0"]["path"] == str(d / "rel.jpg")
    assert rows["train-2.parquet:0"]["image.width"] == 64 and "image" not in rows["train-2.parquet:0"]
    assert "no image bytes or path" in rows["train-2.parquet:1"]["error"]
    assert rows["train-2.parquet:2"]["error"] == (
        f"{d / 'train-2.parquet'} row 2, column 'image': the image's bytes are empty, and its path "
        f"'{d / 'gone.jpg'}' cannot be opened: No such file or directory (a dataset saved without "
        "its images keeps only the paths they had where it was made: pass --image-root FOLDER "
        "where they are)")
    assert rows["train-2.parquet:2"]["path"] == str(d / "gone.jpg")
    assert rows["train-2.parquet:3"]["error"].startswith(
        f"{d / 'train-2.parquet'} row 3, column 'image': the image's bytes are null, and its path "
        "'/nonexistent/cache/abs.jpg' cannot be opened: No such file or directory")
    assert rows["train-2.parquet:3"]["error"].endswith(
        "put them there, or save the dataset with its images embedded)")
    assert rows["train-2.parquet:3"]["error_stage"] == "read"
    assert "train-3.parquet" in rows["train-3.parquet"]["error"]
    con = duckdb.connect()
    (total,) = con.execute(f"select sum(label) from '{tmp_path / 'o' / 'part-00000.parquet'}' "
                           "where error is null").fetchone()
    assert total == sum(range(4)) + 100 + 101 + 102 + 200


def test_parquet_input_of_a_v2_writer_with_legacy_types(sluice, tmp_path):
    """A file as Spark's v2 writer or DuckDB's V2 leave it: DELTA_* and
    BYTE_STREAM_SPLIT pages under lz4, a decimal and an INT96 timestamp:
    captioned, its columns passed through as decimal(9,2) (they were a
    double) and int64 nanoseconds."""
    import datetime
    import decimal
    imgs = JPEGS[:4]
    table = hf_table(imgs, 0).append_column(
        "price", pa.array([decimal.Decimal(1999 + i).scaleb(-2) for i in range(4)], pa.decimal128(9, 2))
    ).append_column(
        "taken", pa.array([datetime.datetime(2021, 3, 4, 5, 6, 7) + datetime.timedelta(days=i) for i in range(4)],
                          pa.timestamp("ns")))
    src = tmp_path / "spark.parquet"
    pq.write_table(table, src, compression="lz4", use_dictionary=False, use_deprecated_int96_timestamps=True,
                   data_page_version="2.0",
                   column_encoding={"image.bytes": "DELTA_LENGTH_BYTE_ARRAY", "image.path": "DELTA_BYTE_ARRAY",
                                    "label": "DELTA_BINARY_PACKED", "text": "DELTA_BYTE_ARRAY",
                                    "weight": "BYTE_STREAM_SPLIT"})
    r = run(sluice, src, tmp_path / "o", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "o" / "part-00000.parquet"
    rows = by_id(pq.read_table(out).to_pylist())
    assert set(rows) == {f"spark.parquet:{i}" for i in range(4)}
    ns = table["taken"].cast(pa.int64()).to_pylist()
    for i in range(4):
        row = rows[f"spark.parquet:{i}"]
        assert row["error"] is None and row["caption"]
        assert (row["label"], row["text"], row["weight"]) == (i, f"row {i}", 0.5 * i if i % 2 else None)
        assert row["price"] == decimal.Decimal(1999 + i).scaleb(-2) and row["taken"] == ns[i]
    (total,) = duckdb.connect().execute(f"select sum(price) from '{out}'").fetchone()
    assert total == sum(decimal.Decimal(1999 + i).scaleb(-2) for i in range(4))


def test_nan_infinities_and_unsigned_integers_pass_through(sluice, tmp_path):
    """Floats NaN and +-inf (numpy-built data holds them) and unsigned
    integers, at the top and inside a struct and a list, from Parquet and
    from Arrow alike: NaN and the infinities, which JSON has no form for,
    are null (a NaN used to stop the job as 'out of memory', the rows after
    it never read); a uint32 past 2^31 and a uint64 past 2^63 keep their
    values (the Parquet reader wrapped them to -1: a UINT_32 or UINT_64
    annotation was ignored), a uint64 column whose values pass INT64_MAX
    is a double column, as an Arrow input's is."""
    import pyarrow.feather as feather
    imgs = JPEGS[:3]
    nan, inf = float("nan"), float("inf")
    table = hf_table(imgs, 0).append_column("score", pa.array([1.5, nan, inf])) \
        .append_column("f32", pa.array([-inf, 2.5, None], pa.float32())) \
        .append_column("u32", pa.array([2**32 - 1, 2**31, 7], pa.uint32())) \
        .append_column("u64", pa.array([2**64 - 1, 2**63, 1], pa.uint64())) \
        .append_column("small_u64", pa.array([5, 6, 2**63 - 1], pa.uint64())) \
        .append_column("nested", pa.array(
            [{"h": 2**64 - 1, "v": [nan, 1.0]}, {"h": 3, "v": []}, None],
            pa.struct([("h", pa.uint64()), ("v", pa.list_(pa.float64()))]))) \
        .append_column("lu", pa.array([[2**32 - 1, 0], [1], None], pa.list_(pa.uint32())))
    want = [
        {"score": 1.5, "f32": None, "u32": 2**32 - 1, "u64": float(2**64 - 1), "small_u64": 5,
         "nested": {"h": float(2**64 - 1), "v": [None, 1.0]}, "lu": [2**32 - 1, 0]},
        {"score": None, "f32": 2.5, "u32": 2**31, "u64": float(2**63), "small_u64": 6,
         "nested": {"h": 3.0, "v": []}, "lu": [1]},
        {"score": None, "f32": None, "u32": 7, "u64": 1.0, "small_u64": 2**63 - 1, "nested": None, "lu": None},
    ]
    pq.write_table(table, tmp_path / "nums.parquet")
    feather.write_feather(table, tmp_path / "nums.arrow")
    for name in ("nums.parquet", "nums.arrow"):
        for fmt in ("jsonl", "parquet"):
            out = tmp_path / f"{name}-{fmt}"
            r = run(sluice, tmp_path / name, out, "--format", fmt)
            assert r.returncode == 0, r.stderr
            if fmt == "jsonl":
                rows = by_id(jsonl_rows(out))
            else:
                t = pq.read_table(out / "part-00000.parquet")
                types = {f: str(t.schema.field(f).type) for f in ("u32", "u64", "small_u64", "nested", "lu")}
                assert types == {"u32": "int64", "u64": "double", "small_u64": "int64",
                                 "nested": "struct<h: double, v: list<element: double>>",
                                 "lu": "list<element: int64>"}, (name, types)
                rows = by_id(t.to_pylist())
            assert len(rows) == 3, (name, fmt, sorted(rows))
            for i in range(3):
                row = rows[f"{name}:{i}"]
                assert row["error"] is None and row["caption"], (name, fmt, row)
                assert {k: row[k] for k in want[i]} == want[i], (name, fmt, i)


def test_a_list_longer_than_a_batch_passes_through(sluice, tmp_path):
    """A row whose list holds more elements than the Parquet reader's batch
    (65,536: a mask's RLE counts, a long list of token ids) is read whole,
    a batch of its own, and passes through to JSONL and to Parquet; the
    rows after it are read too (the file used to fail there, the rest of
    it skipped)."""
    imgs = JPEGS[:4]
    counts = [list(range(100_000)), [1, 2], None, list(range(70_000, 0, -1))]
    nested = [[[k] * 3 for k in range(30_000)], [], [[1], None], None]  # 90,000 elements in 30,000 lists
    table = hf_table(imgs, 0).append_column("counts", pa.array(counts, pa.list_(pa.int64()))) \
        .append_column("nested", pa.array(nested, pa.list_(pa.list_(pa.int32()))))
    src = tmp_path / "long.parquet"
    pq.write_table(table, src)
    for fmt in ("jsonl", "parquet"):
        r = run(sluice, src, tmp_path / fmt, "--format", fmt)
        assert r.returncode == 0, r.stderr
        got = jsonl_rows(tmp_path / fmt) if fmt == "jsonl" else \
            [row for p in sorted((tmp_path / fmt).glob("part-*.parquet")) for row in pq.read_table(p).to_pylist()]
        rows = by_id(got)
        assert len(rows) == 4, sorted(rows)
        for i in range(4):
            row = rows[f"long.parquet:{i}"]
            assert row["error"] is None, row["error"]
            assert row["counts"] == counts[i] and row["nested"] == nested[i], (fmt, i)


def test_parquet_nested_columns_pass_through_whole(sluice, tmp_path):
    """Lists of structs (LLaVA's conversations), a struct of lists of lists
    (a detection dataset's objects, as Hugging Face stores a Sequence of
    dicts), a struct of flat fields (null in a row, and with a null field),
    maps and lists three deep pass through as the values pyarrow reads: in
    JSONL as JSON, in Parquet as typed columns (lists, structs, maps: the
    input's types) that DuckDB queries. A template and --prompt-column
    reach a struct's field by its dotted path."""
    imgs = JPEGS[:5]
    conv = pa.struct([("from", pa.string()), ("value", pa.string())])
    objects = pa.struct([("bbox", pa.list_(pa.list_(pa.float32(), 4))), ("category", pa.list_(pa.int64()))])
    conversations = [[{"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
                      {"from": "gpt", "value": None if i == 2 else f"Answer {i} with \"quotes\" and [brackets]"}]
                     for i in range(4)] + [None]
    objs = [{"bbox": [[0.5 * j, 1.0, 2.0, 3.25] for j in range(i)], "category": list(range(i))} for i in range(4)] + \
        [{"bbox": None, "category": []}]
    attrs = [[("source", f"s{i}"), ("license", "cc-by")] for i in range(3)] + [[], None]
    deep = [[[[1, 2], []], [None]], None, [], [[[3]]], [[None, [4, 5, 6]]]]
    source = pa.struct([("site", pa.string()), ("license", pa.string()), ("rank", pa.int16())])
    sources = [{"site": f"site{i}", "license": None if i == 1 else "cc-by", "rank": i} for i in range(5)]
    sources[3] = None
    # A field's name may hold a dot; "x" beside "x.y" is a struct of its own.
    dotted = pa.struct([("x.y", pa.int32()), ("x", pa.struct([("y", pa.string())]))])
    dots = [{"x.y": i, "x": {"y": f"y{i}"}} for i in range(5)]
    # The same, the "x.y" leaf binary (not read): its name's other leaf is.
    bdotted = pa.struct([("x.y", pa.binary()), ("x", pa.struct([("y", pa.string())]))])
    bdots = [{"x.y": b"\x00", "x": {"y": f"b{i}"}} for i in range(5)]
    # 16 groups deep, all a leaf lists: a part still ends at a group.
    deep_type, deep_values = pa.struct([("x.y", pa.int32())]), [{"x.y": i} for i in range(5)]
    for level in range(15):
        deep_type = pa.struct([(f"l{level}", deep_type)])
        deep_values = [{f"l{level}": v} for v in deep_values]
    table = hf_table(imgs, 0).append_column("conversations", pa.array(conversations, pa.list_(conv))) \
        .append_column("objects", pa.array(objs, objects)) \
        .append_column("source", pa.array(sources, source)) \
        .append_column("dots", pa.array(dots, dotted)) \
        .append_column("bdots", pa.array(bdots, bdotted)) \
        .append_column("nest", pa.array(deep_values, deep_type)) \
        .append_column("attrs", pa.array(attrs, pa.map_(pa.string(), pa.string()))) \
        .append_column("deep", pa.array(deep, pa.list_(pa.list_(pa.list_(pa.int32())))))
    src = tmp_path / "nested.parquet"
    pq.write_table(table, src, row_group_size=2, data_page_size=64)
    want = pq.read_table(src).to_pylist()
    for row in want:  # a map with string keys is an object
        row["attrs"] = None if row["attrs"] is None else dict(row["attrs"])
    r = run(sluice, src, tmp_path / "o")
    assert r.returncode == 0, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    for i in range(5):
        row = rows[f"nested.parquet:{i}"]
        assert row["error"] is None, row
        for col in ("conversations", "objects", "source", "dots", "nest", "attrs", "deep", "label", "text"):
            assert row[col] == want[i][col], (i, col, row[col])
        assert row["bdots"] == {"x": {"y": f"b{i}"}}, row["bdots"]  # binary leaves do not pass
        assert not [k for k in row if "." in k], row  # no dotted leaves beside the structs
    r = run(sluice, src, tmp_path / "p", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "p" / "part-00000.parquet"
    written = pq.read_table(out)
    types = {f.name: str(f.type) for f in written.schema}
    assert types["conversations"] == "list<element: struct<from: string, value: string>>"
    assert types["objects"] == "struct<bbox: list<element: list<element: double>>, category: list<element: int64>>"
    assert types["source"] == "struct<site: string, license: string, rank: int64>"
    assert types["attrs"].startswith("map<string, string")  # the input's map, not a struct of the keys seen
    assert types["deep"] == "list<element: list<element: list<element: int64>>>"
    assert types["dots"] == "struct<x.y: int64, x: struct<y: string>>"  # a field named with a '.'
    got = by_id(written.to_pylist())
    for i in range(5):
        row = got[f"nested.parquet:{i}"]
        for col in ("conversations", "objects", "source", "deep", "dots"):
            assert row[col] == want[i][col], (i, col, row[col])
        assert (None if row["attrs"] is None else dict(row["attrs"])) == want[i]["attrs"], i
    firsts = duckdb.connect().execute(
        f"select conversations[2].value from '{out}' order by id").fetchall()
    assert [f for (f,) in firsts] == ["Answer 0 with \"quotes\" and [brackets]", "Answer 1 with \"quotes\" and "
                                      "[brackets]", None, "Answer 3 with \"quotes\" and [brackets]", None]
    sites = duckdb.connect().execute(f"select source.site, source.rank from '{out}' order by id").fetchall()
    assert sites == [("site0", 0), ("site1", 1), ("site2", 2), (None, None), ("site4", 4)]
    xy = duckdb.connect().execute(f"select dots.\"x.y\", dots.x.y from '{out}' order by id").fetchall()
    assert xy == [(i, f"y{i}") for i in range(5)]

    # A template's field and the prompt column name a struct's field by its
    # path: the row whose struct is null fails naming it (template), or
    # takes the job's prompt (prompt column: a prompt of its own is shorter).
    r = run(sluice, src, tmp_path / "t", "--prompt", "Site {source.site}")
    assert r.returncode == 3, r.stderr  # rows failed
    rows = by_id(jsonl_rows(tmp_path / "t"))
    assert [i for i in range(5) if rows[f"nested.parquet:{i}"]["error"]] == [3], rows
    assert "source.site" in rows["nested.parquet:3"]["error"]
    r = run(sluice, src, tmp_path / "c", "--prompt-column", "source.site", "--prompt",
            "Describe this picture in one long and careful sentence, please.")
    assert r.returncode == 0, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "c"))
    tokens = [rows[f"nested.parquet:{i}"]["prompt_tokens"] for i in range(5)]
    assert len({tokens[i] for i in (0, 1, 2, 4)}) == 1 and tokens[3] > tokens[0], tokens

    # --columns picks a struct's field by its path: its own column, typed
    # by the schema's field (a list of int64 empty in the first rows too).
    for fmt in ("parquet", "jsonl"):
        r = run(sluice, src, tmp_path / f"f-{fmt}", "--columns", "objects.category,source.rank,label",
                "--format", fmt)
        assert r.returncode == 0, r.stderr
        if fmt == "parquet":
            picked = pq.read_table(tmp_path / "f-parquet" / "part-00000.parquet")
            types = {f.name: str(f.type) for f in picked.schema}
            assert types["objects.category"] == "list<element: int64>" and types["source.rank"] == "int64", types
            assert "objects" not in types and "source" not in types and "source.site" not in types, types
            got = by_id(picked.to_pylist())
        else:
            got = by_id(jsonl_rows(tmp_path / "f-jsonl"))
        for i in range(5):
            row, src_row = got[f"nested.parquet:{i}"], want[i]
            assert row.get("objects.category") == src_row["objects"]["category"], (fmt, i, row)
            assert row.get("source.rank") == (src_row["source"] or {}).get("rank"), (fmt, i, row)
            assert row["label"] == src_row["label"] and "source" not in row, (fmt, i, row)


def test_an_image_column_inside_a_list_is_refused_naming_the_list(sluice, tmp_path):
    """A leaf inside a list holds the list's elements, not a row's image:
    named as an image column (alone, or as one of several) it fails the
    file with a message naming the list, rather than reading the elements
    as rows (which read past them)."""
    n = 40
    table = hf_table(JPEGS[:1] * n, 0).append_column(
        "tags", pa.array([[] if i % 3 else [str(JPEGS[0])] for i in range(n)], pa.list_(pa.string())))
    src = tmp_path / "tags.parquet"
    pq.write_table(table, src)
    for cols, alone in (("image,tags.list.element", True), ("tags.list.element", False)):
        r = run(sluice, src, tmp_path / f"o{int(alone)}", "--image-column", cols)
        assert r.returncode == 3, r.stderr
        (row,) = jsonl_rows(tmp_path / f"o{int(alone)}")
        assert "image column 'tags.list.element' is inside list 'tags'" in row["error"], row
        assert ("as the only --image-column" in row["error"]) == alone, row
    r = run(sluice, src, tmp_path / "list", "--image-column", "tags")  # the list itself: a list of images
    rows = jsonl_rows(tmp_path / "list")
    assert len(rows) == n and sum(1 for row in rows if row["error"] is None) == len(range(0, n, 3)), r.stderr


# ---- URLs ----------------------------------------------------------------------------------


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; answers 503 to the first request for a path starting
    with /flaky, waits 3 s before answering one starting with /slow, and
    counts the requests per path."""
    hits: dict = {}

    def do_GET(self):
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky") and n == 1:
            self.send_error(503)
            return
        if self.path.startswith("/slow"):
            time.sleep(3)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    FlakyHandler.hits = {}
    handler = functools.partial(FlakyHandler, directory=str(root))
    with LocalServer(handler) as server:
        yield root, server.url


def test_urls_fetched_over_http_with_named_failures(sluice, http_root, tmp_path):
    root, base = http_root
    (root / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    (root / "flaky.jpg").write_bytes(JPEGS[3].read_bytes())
    big = bytearray(JPEGS[1].read_bytes())
    big += b"\0" * (2 * 1024 * 1024 - len(big) + 10)
    (root / "big.jpg").write_bytes(bytes(big))
    rows_in = [
        {"id": "ok", "url": f"{base}/a.jpg"},
        {"id": "404", "url": f"{base}/nope.jpg"},
        {"id": "flaky", "url": f"{base}/flaky.jpg"},
        {"id": "big", "url": f"{base}/big.jpg"},
        {"id": "file", "url": f"file://{JPEGS[2]}"},
        {"id": "ftp", "url": "ftp://127.0.0.1/x.jpg"},
    ]
    manifest = tmp_path / "urls.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    r = run(sluice, manifest, tmp_path / "o", "--max-download-bytes", "2M")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert set(rows) == {"ok", "404", "flaky", "big", "file", "ftp"}
    assert rows["flaky"]["error"] is None and FlakyHandler.hits["/flaky.jpg"] == 2  # a 503 is retried
    assert FlakyHandler.hits["/nope.jpg"] == 1  # a 404 is not
    assert rows["ok"]["error"] is None and rows["ok"]["caption"]
    assert rows["ok"]["path"] == f"{base}/a.jpg"
    assert "HTTP 404" in rows["404"]["error"] and "nope.jpg" in rows["404"]["error"]
    assert "limit" in rows["big"]["error"] and "big.jpg" in rows["big"]["error"]
    assert "--allow-file-urls" in rows["file"]["error"] and rows["file"]["error_stage"] == "read"
    assert "scheme 'ftp'" in rows["ftp"]["error"]
    r = run(sluice, manifest, tmp_path / "o2", "--allow-file-urls", "--max-download-bytes", "2M")
    rows = by_id(jsonl_rows(tmp_path / "o2"))
    assert rows["file"]["error"] is None and rows["file"]["path"] == str(JPEGS[2])


def test_a_url_with_spaces_is_fetched_as_browsers_send_it(sluice, http_root, tmp_path):
    """A space in a URL (https://host/my photo.jpg, as manifests scraped
    from web pages hold) failed the row with libcurl's "URL using
    bad/illegal format"; it goes out as %20, as browsers and Python's
    requests send it. The row's path is the URL as written."""
    root, base = http_root
    (root / "my photo.jpg").write_bytes(JPEGS[0].read_bytes())
    manifest = tmp_path / "urls.jsonl"
    manifest.write_text(json.dumps({"id": "spaced", "url": f"{base}/my photo.jpg"}) + "\n")
    r = run(sluice, manifest, tmp_path / "o")
    assert r.returncode == 0, r.stderr
    row = by_id(jsonl_rows(tmp_path / "o"))["spaced"]
    assert row["error"] is None and row["caption"], row
    assert row["path"] == f"{base}/my photo.jpg"
    assert FlakyHandler.hits == {"/my%20photo.jpg": 1}


class SecretsHandler(http.server.BaseHTTPRequestHandler):
    """Serves JPEGS[0] at /private/* to basic auth alice:hunter2pw only, and
    at /signed/* to a query holding X-Amz-Signature=sigsecret0 only (as a
    presigned URL); a name with "missing" in it is a 404 then."""

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path.startswith("/private/"):
            allowed = self.headers.get("Authorization") == "Basic " + \
                base64.b64encode(b"alice:hunter2pw").decode()
        else:
            allowed = "X-Amz-Signature=sigsecret0" in query.split("&")
        if not allowed:
            self.send_error(403)
        elif "missing" in path:
            self.send_error(404)
        else:
            data = JPEGS[0].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_urls_password_and_signature_stay_out_of_the_output(sluice, tmp_path):
    """An image URL's password (http://user:PASSWORD@host) and a presigned
    URL's signature went into the failed row's error, stderr, _report.html
    and every row's path column: a published caption set handed out the
    credentials. They still reach the server; what sluice prints and
    writes shows them as *** (docs/inputs.md, URLs)."""
    with LocalServer(SecretsHandler) as server:
        host = server.url.removeprefix("http://")
        auth = f"http://alice:hunter2pw@{host}"
        sig = "X-Amz-Credential=AKIDsecret1%2F20261205&X-Amz-Signature=sigsecret0&v=1"
        rows_in = [
            {"id": "private", "url": f"{auth}/private/a.jpg"},
            {"id": "signed", "url": f"{server.url}/signed/b.jpg?{sig}"},
            {"id": "private-404", "url": f"{auth}/private/missing.jpg"},
            {"id": "signed-404", "url": f"{server.url}/signed/missing.jpg?{sig}"},
        ]
        manifest = tmp_path / "urls.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
        out = tmp_path / "o"
        r = run(sluice, manifest, out, "--show", "4")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(out))
    shown_sig = "X-Amz-Credential=***&X-Amz-Signature=***&v=1"
    assert rows["private"]["error"] is None and rows["private"]["caption"]
    assert rows["signed"]["error"] is None and rows["signed"]["caption"]
    assert rows["private"]["path"] == f"http://alice:***@{host}/private/a.jpg"
    assert rows["signed"]["path"] == f"{server.url}/signed/b.jpg?{shown_sig}"
    assert rows["private-404"]["error"] == \
        f"cannot download 'http://alice:***@{host}/private/missing.jpg': HTTP 404"
    assert rows["signed-404"]["error"] == \
        f"cannot download '{server.url}/signed/missing.jpg?{shown_sig}': HTTP 404"
    written = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file())
    for secret in ("hunter2pw", "sigsecret0", "AKIDsecret1"):
        assert secret not in r.stderr + r.stdout, secret
        assert secret.encode() not in written, secret


def test_file_urls_are_percent_decoded_and_bad_escapes_fail_the_row(sluice, tmp_path):
    """A file:// URL names its path percent-encoded (RFC 8089, as Python's
    pathlib.Path.as_uri() writes it): file:///d/a%20b.jpg is "/d/a b.jpg".
    It was opened as typed, %20 and all, and failed as missing. A %00 (a
    name cannot hold NUL) and a malformed escape fail the row naming the
    URL."""
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a b.jpg", "100%.jpg", "caf\u00e9.jpg"):
        (d / name).write_bytes(JPEGS[0].read_bytes())
    rows_in = [
        {"id": "space", "url": (d / "a b.jpg").as_uri()},
        {"id": "percent", "url": (d / "100%.jpg").as_uri()},
        {"id": "utf8", "url": (d / "caf\u00e9.jpg").as_uri()},
        {"id": "nul", "url": f"file://{d}/a%00b.jpg"},
        {"id": "bad", "url": f"file://{d}/a%zzb.jpg"},
        {"id": "short", "url": f"file://{d}/a%2"},
    ]
    assert "%20" in rows_in[0]["url"] and "%25" in rows_in[1]["url"]
    manifest = tmp_path / "urls.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    r = run(sluice, manifest, tmp_path / "o", "--allow-file-urls")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    for k, name in (("space", "a b.jpg"), ("percent", "100%.jpg"), ("utf8", "caf\u00e9.jpg")):
        assert rows[k]["error"] is None, rows[k]["error"]
        assert rows[k]["path"] == str(d / name)
    for k in ("nul", "bad", "short"):
        url = next(x["url"] for x in rows_in if x["id"] == k)
        assert url in rows[k]["error"] and rows[k]["error_stage"] == "read", rows[k]["error"]
    assert "%00" in rows["nul"]["error"]
    assert "%zz" in rows["bad"]["error"]


class KeepAliveHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files over HTTP/1.1 (connections stay open between
    requests) and counts the connections it accepted."""
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self):
        type(self).connections += 1
        super().setup()

    def log_message(self, *args):
        pass


def test_downloads_keep_their_connections_open(sluice, tmp_path):
    """A decode worker's downloads go over the connection its last one left
    open: 12 images from one server over 1 connection with one worker, at
    most 2 with two (before: a connection per image)."""
    root = tmp_path / "www"
    root.mkdir()
    for i in range(12):
        (root / f"{i}.jpg").write_bytes(JPEGS[i % len(JPEGS)].read_bytes())
    handler = functools.partial(KeepAliveHandler, directory=str(root))
    with LocalServer(handler) as server:
        for workers, most in ((1, 1), (2, 2)):
            KeepAliveHandler.connections = 0
            manifest = tmp_path / f"urls{workers}.jsonl"
            manifest.write_text("".join(json.dumps({"id": str(i), "url": f"{server.url}/{i}.jpg"})
                                        + "\n" for i in range(12)))
            out = tmp_path / f"o{workers}"
            r = run(sluice, manifest, out, "--decode-workers", str(workers))
            assert r.returncode == 0, r.stderr
            rows = jsonl_rows(out)
            assert len(rows) == 12 and all(row["error"] is None for row in rows)
            assert 1 <= KeepAliveHandler.connections <= most, KeepAliveHandler.connections


def test_download_timeout_and_retries_are_set_from_the_command_line(sluice, http_root, tmp_path):
    root, base = http_root
    (root / "slow.jpg").write_bytes(JPEGS[0].read_bytes())
    (root / "flaky.jpg").write_bytes(JPEGS[3].read_bytes())
    manifest = tmp_path / "urls.jsonl"
    manifest.write_text(json.dumps({"id": "slow", "url": f"{base}/slow.jpg"}) + "\n" +
                        json.dumps({"id": "flaky", "url": f"{base}/flaky.jpg"}) + "\n")
    t0 = time.monotonic()
    r = run(sluice, manifest, tmp_path / "o", "--download-timeout", "0.5", "--download-retries", "0")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert "slow.jpg" in rows["slow"]["error"] and "timed out" in rows["slow"]["error"].lower()
    assert "HTTP 503" in rows["flaky"]["error"]
    assert FlakyHandler.hits["/slow.jpg"] == 1 and FlakyHandler.hits["/flaky.jpg"] == 1
    assert time.monotonic() - t0 < 30  # not the 30 s default, nor a retry's wait
    FlakyHandler.hits = {}
    r = run(sluice, manifest, tmp_path / "o2", "--download-timeout", "10", "--download-retries", "1")
    assert r.returncode == 0, r.stderr
    assert FlakyHandler.hits["/flaky.jpg"] == 2  # the 503, then the image
    r = run(sluice, manifest, tmp_path / "o3", "--download-retries", "-1")
    assert r.returncode == 2 and "--download-retries" in r.stderr


# ---- folders, shards, names ------------------------------------------------------------------


def test_folder_globs_and_output_shards(sluice, tmp_path):
    every = [str(p.relative_to(SAMPLES)) for p in sample_images()]
    r = run(sluice, SAMPLES, tmp_path / "o", "--include", "*.jpg", "--exclude", "variants/*thumb*",
            "--shard-rows", "3", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    want = {p for p in every if p.endswith(".jpg") and not ("variants/" in p and "thumb" in p)}
    shards = sorted((tmp_path / "o").glob("part-*.parquet"))
    assert [s.name for s in shards] == [f"part-{i:05d}.parquet" for i in range((len(want) + 2) // 3)]
    counts = [pq.read_metadata(s).num_rows for s in shards]
    assert all(c == 3 for c in counts[:-1]) and 1 <= counts[-1] <= 3
    ids = [row["id"] for s in shards for row in pq.read_table(s).to_pylist()]
    assert sorted(ids) == sorted(want)
    assert not list((tmp_path / "o").glob(".*tmp*"))
    # JSONL too, and an exact multiple leaves no empty last shard.
    r = run(sluice, SAMPLES, tmp_path / "j", "--include", "*.jpg", "--exclude", "variants/*",
            "--shard-rows", "2")
    top = [p for p in every if p.endswith(".jpg") and "/" not in p]
    assert r.returncode == 0 and len(top) % 2 == 0, r.stderr
    assert len(list((tmp_path / "j").glob("part-*.jsonl"))) == len(top) // 2
    assert sorted(r["id"] for r in jsonl_rows(tmp_path / "j")) == sorted(top)


def test_non_utf8_names_and_missing_inputs(sluice, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/caf\xe9.jpg"
    with open(raw, "wb") as f:
        f.write(JPEGS[0].read_bytes())
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"image": "in/caf\xe9.jpg"}\n{"image": "in/ok.jpg"}\n')
    (d / "ok.jpg").write_bytes(JPEGS[1].read_bytes())
    r = run(sluice, d, tmp_path / "o", "--quiet")  # the CLI prints names as the bytes they are
    assert r.returncode == 0, r.stderr
    rows = jsonl_rows(tmp_path / "o")
    assert sorted(r["id"] for r in rows) == ["caf\ufffdE9.jpg", "ok.jpg"]
    r = run(sluice, manifest, tmp_path / "o2", "--quiet")
    rows = by_id(jsonl_rows(tmp_path / "o2"))
    assert r.returncode == 3 and "invalid JSON" in rows["m.jsonl:1"]["error"]
    assert rows["m.jsonl:2"]["error"] is None

    # CSV values are bytes: a Latin-1 file name in a CSV manifest still opens.
    (tmp_path / "m.csv").write_bytes(b"image,who\nin/caf\xe9.jpg,caf\xe9\n")
    r = run(sluice, tmp_path / "m.csv", tmp_path / "o4", "--quiet")
    rows = jsonl_rows(tmp_path / "o4")
    assert r.returncode == 0 and rows[0]["error"] is None, rows
    assert rows[0]["who"] == "caf\ufffd"

    r = run(sluice, tmp_path / "nope.jsonl", tmp_path / "o3")
    assert r.returncode == 2 and "nope.jsonl" in r.stderr
    r = run(sluice, str(tmp_path / "none-*.tar"), tmp_path / "o3")
    assert r.returncode == 2 and "matches no file" in r.stderr
    (tmp_path / "x.bin").write_bytes(b"?")
    r = run(sluice, tmp_path / "x.bin", tmp_path / "o3")
    assert r.returncode == 2 and "--input-format" in r.stderr
    r = run(sluice, [d, manifest], tmp_path / "o3")
    assert r.returncode == 2 and "mix kinds" in r.stderr
    r = run(sluice, d, tmp_path / "o3", "--include-image-bytes")
    assert r.returncode == 2 and "--format parquet" in r.stderr


def test_names_that_differ_only_in_invalid_utf8_bytes_keep_their_own_ids(sluice, tmp_path):
    """Two files whose names differ only in bytes that are not UTF-8 were one
    id in the output (each bad byte became U+FFFD), so one row hid the other
    and --retry-failed, which reads the ids back from the parts, found
    neither in the ledger. Now each bad byte is U+FFFD and its hex digits
    (a U+FFFD in a name is escaped too): two rows, and a retry after a fix
    replaces the failed one."""
    d = tmp_path / "in"
    d.mkdir()
    root = os.fsencode(str(d))
    with open(root + b"/x\xe9.jpg", "wb") as f:
        f.write(JPEGS[0].read_bytes())
    with open(root + b"/x\xe8.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a jpeg")
    (d / "y\ufffd.jpg").write_bytes(JPEGS[1].read_bytes())
    out = tmp_path / "o"
    r = run(sluice, d, out, "--quiet")
    assert r.returncode == 3, r.stderr
    rows = by_id(jsonl_rows(out))
    assert set(rows) == {"x\ufffdE9.jpg", "x\ufffdE8.jpg", "y\ufffdEF\ufffdBF\ufffdBD.jpg"}
    assert rows["x\ufffdE9.jpg"]["error"] is None
    assert rows["x\ufffdE8.jpg"]["error"] and rows["x\ufffdE8.jpg"]["error_stage"] == "decode"
    with open(root + b"/x\xe8.jpg", "wb") as f:
        f.write(JPEGS[2].read_bytes())
    r = run(sluice, d, out, "--quiet", "--retry-failed")
    assert r.returncode == 0, r.stderr
    rows = by_id(jsonl_rows(out))
    assert len(rows) == 3 and all(v["error"] is None for v in rows.values()), rows


def test_progress_knows_the_total_of_a_manifest(sluice, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(p)}) + "\n" for p in JPEGS))
    r = run(sluice, manifest, tmp_path / "o", "--progress-every", "0.05")
    assert r.returncode == 0, r.stderr
    last = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
    assert f"{len(JPEGS)} of {len(JPEGS)} (100%)" in last


# ---- input shards (scale-out by hand: N runs, each I/N) -----------------------------


def test_input_shards_by_item_split_a_manifest_exactly(sluice, tmp_path):
    images = sample_images()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{i:02d}", "image": str(p)}) + "\n"
                                for i, p in enumerate(images)))
    size, count = 3, 3
    seen = []
    for k in range(count):
        out = tmp_path / f"o{k}"
        r = run(sluice, manifest, out, "--input-shard", f"{k}/{count}", "--input-shard-size",
                str(size), "--progress-every", "0.05")
        assert r.returncode in (0, 3), r.stderr
        ids = set(by_id(jsonl_rows(out)))
        # Manifest order: items [3j, 3j+3) are shard j, and shard j goes to run j % 3.
        assert ids == {f"r{i:02d}" for i in range(len(images)) if (i // size) % count == k}
        last = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
        assert f"{len(ids)} of {len(ids)} (100%)" in last
        seen += ids
    assert sorted(seen) == [f"r{i:02d}" for i in range(len(images))]


def test_a_file_cut_between_two_runs_reads_ends_the_later_run(sluice, tmp_path):
    """Shared out by item (more runs than files), each run counts every
    item's place in the input: a tar cut after one run read it whole and
    before another opened it gave the later run a shorter stream, so its
    shards after the cut held the wrong samples (rows lost, others twice,
    exit 0). The later run now ends (exit 1) naming the file and the
    change. The pause before each file's open is the test fault point
    source.open."""
    make_shards(tmp_path / "wds", n_shards=2, per_shard=6)
    shards = str(tmp_path / "wds" / "data-{000..001}.tar")
    first = tmp_path / "wds" / "data-000.tar"
    r = run(sluice, shards, tmp_path / "o0", "--input-shard", "0/3", "--input-shard-size", "2")
    assert r.returncode == 0, r.stderr
    args = [str(sluice.binary), "caption", shards, "-o", str(tmp_path / "o1"), "--model",
            str(sluice_model()), "--mmproj", str(sluice_model("mmproj")), *FAST,
            "--input-shard", "1/3", "--input-shard-size", "2"]
    env = dict(os.environ, SLUICE_TEST_FAULTS="trace,source.open=sleep:1500")
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    err = []
    try:
        for line in p.stderr:
            err.append(line)
            if "test fault point source.open" in line and "data-000.tar" in line:
                break
        size = first.stat().st_size
        with open(first, "r+b") as f:  # cut mid-member, as a copy still being written
            f.truncate(size // 2)
        err += p.stderr.readlines()
        rc = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    stderr = "".join(err)
    assert not any(m in stderr for m in SANITIZER_MARKS), stderr
    assert rc == 1, (rc, stderr[-3000:])
    assert f"input '{first}' changed while the job ran ({size} bytes when it began, " \
           f"{size // 2} bytes now)" in stderr, stderr[-3000:]
    assert "run it again" in stderr


def test_input_shards_by_file_skip_other_runs_files(sluice, tmp_path):
    expect = make_shards(tmp_path / "wds", n_shards=3, per_shard=2)
    shards = str(tmp_path / "wds" / "data-{000..002}.tar")
    got = {}
    for k in range(2):
        r = run(sluice, shards, tmp_path / f"o{k}", "--input-shard", f"{k}/2")
        assert r.returncode == 0, r.stderr
        got[k] = set(by_id(jsonl_rows(tmp_path / f"o{k}")))
    # Three files, two runs: files 0 and 2 go to run 0, file 1 to run 1.
    assert {i.split("/")[0] for i in got[0]} == {"data-000.tar", "data-002.tar"}
    assert {i.split("/")[0] for i in got[1]} == {"data-001.tar"}
    assert got[0] | got[1] == set(expect) and not got[0] & got[1]


def test_input_shard_is_checked(sluice, tmp_path):
    for bad in ("2/2", "1/0", "x/2", "1", "-1/2"):
        r = run(sluice, SAMPLES, tmp_path / "o", "--input-shard", bad)
        assert r.returncode == 2 and "--input-shard takes I/N" in r.stderr, (bad, r.stderr)


# ---- ids unique across inputs (issue 11, defect 7) ------------------------------------


def peak_rss_mb(args) -> tuple[subprocess.CompletedProcess, float]:
    """Runs args in a Python child that reports its own child's peak RSS, so
    the figure is this run's alone (RUSAGE_CHILDREN of a process with one
    child)."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stdout.write(r.stdout)\nsys.stderr.write(r.stderr)\n"
             "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True,
                       text=True, timeout=900)
    kb = int(r.stdout.rsplit("peak-rss-kb", 1)[1].split()[0])
    return r, kb / 1024


def caption_args(inputs, out, *extra):
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return [sluice_bin_path(), "caption", *inputs, "-o", out, "--model", sluice_model(),
            "--mmproj", sluice_model("mmproj"), *FAST, *extra]


def sluice_bin_path():
    from conftest import REPO
    return pathlib.Path(os.environ.get("SLUICE_BIN", REPO / "build" / "sluice"))


def test_one_file_name_in_two_folders_resumes_exactly_once(sluice, tmp_path):
    """Defect: ids were built from base names, so en/0000.parquet and
    fr/0000.parquet gave the same ids, and a run stopped after en's part was
    committed skipped fr's rows on resume as done."""
    from test_resume import assert_exactly_once, interrupt, part_ids
    from test_resume import run as resume_run
    rows = 60
    for lang in ("en", "fr"):
        (tmp_path / "data" / lang).mkdir(parents=True)
        imgs = [JPEGS[i % len(JPEGS)] for i in range(rows)]
        pq.write_table(hf_table(imgs, 0), tmp_path / "data" / lang / "0000.parquet")
    pattern = str(tmp_path / "data" / "*" / "0000.parquet")
    want = sorted(f"{lang}/0000.parquet:{i}" for lang in ("en", "fr") for i in range(rows))
    out = tmp_path / "o"
    rc = interrupt(sluice, pattern, out, signal.SIGKILL, "--ordered", "--shard-rows", str(rows),
                   log=tmp_path / "killed.log")
    assert rc == -signal.SIGKILL
    before = part_ids(out)
    assert 0 < len(before) < len(want), "the kill should land mid-run"
    r = resume_run(sluice, pattern, out, "--ordered", "--shard-rows", rows)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)
    assert json.loads((out / "_summary.json").read_text())["rows"]["skipped"] == len(before)
    # Done: the same command again redoes nothing and skips every row as done.
    r = resume_run(sluice, pattern, out, "--ordered", "--shard-rows", rows)
    assert r.returncode == 0 and "already done" in r.stdout, r.stderr[-3000:]
    assert json.loads((out / "_summary.json").read_text())["rows"]["skipped"] == len(want)
    assert_exactly_once(out, want)

    # A ledger written before ids named folders (its fingerprint has no
    # 'ids' key, its ids are base names) is refused, not resumed with other ids.
    import sqlite3
    db = sqlite3.connect(out / "_sluice_ledger.sqlite")
    (fp,) = db.execute("select value from meta where key = 'fingerprint'").fetchone()
    assert "\nids\t" in "\n" + fp
    old = "\n".join(l for l in fp.split("\n") if not l.startswith("ids\t"))
    db.execute("update meta set value = ? where key = 'fingerprint'", (old,))
    db.commit()
    db.close()
    r = resume_run(sluice, pattern, out, "--ordered", "--shard-rows", rows)
    assert r.returncode == 2 and "(ids changed since)" in r.stderr, r.stderr[-3000:]
    assert_exactly_once(out, want)


def test_one_file_given_twice_is_refused_before_the_model_loads(sluice, tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"image": str(d / "sub" / "a.jpg")}) + "\n")
    spelled = f"{tmp_path}/./m.jsonl"
    cases = [([m, spelled], (str(m), spelled)),
             ([str(tmp_path / "*.jsonl"), m], (str(m), "named twice")),
             ([d, d / "sub"], (str(d), str(d / "sub")))]
    for inputs, names in cases:
        r = run(sluice, inputs, tmp_path / "o")
        assert r.returncode == 2, r.stderr
        assert all(n in r.stderr for n in names), r.stderr
        # Refused when the inputs are opened: before the output folder (and
        # so before any model).
        assert not (tmp_path / "o").exists()


def test_a_repeated_manifest_id_stops_the_job_naming_both_lines(sluice, tmp_path):
    img = str(JPEGS[0])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "m.jsonl", tmp_path / "b" / "m.jsonl"
    a.write_text("".join(json.dumps({"id": f"r{i}", "image": img}) + "\n" for i in range(3)))
    b.write_text(json.dumps({"id": "s0", "image": img}) + "\n" +
                 json.dumps({"id": "r1", "image": img}) + "\n")
    r = run(sluice, [a, b], tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "'r1'" in r.stderr and f"{a}:2" in r.stderr and f"{b}:2" in r.stderr, r.stderr
    assert "unique" in r.stderr
    # Within one manifest, CSV too.
    c = tmp_path / "c.csv"
    c.write_text(f"id,image\nx,{img}\ny,{img}\nx,{img}\n")
    r = run(sluice, c, tmp_path / "o2")
    assert r.returncode == 2 and f"{c}:2" in r.stderr and f"{c}:4" in r.stderr, r.stderr
    # An id the ledger already holds counts as read: a line added later that
    # repeats it is caught on the resume, although its first row is skipped.
    r = run(sluice, a, tmp_path / "o3")
    assert r.returncode == 0, r.stderr
    with open(a, "a") as f:
        f.write(json.dumps({"id": "r0", "image": img}) + "\n")
    r = run(sluice, a, tmp_path / "o3")
    assert r.returncode == 2 and f"{a}:1" in r.stderr and f"{a}:4" in r.stderr, r.stderr
    assert sorted(by_id(jsonl_rows(tmp_path / "o3"))) == ["r0", "r1", "r2"]


# ---- hostile inputs (issue 11, "resume under chaos"; defect 9) -------------------------


def test_hostile_inputs_fail_alone_in_bounded_memory(sluice, tmp_path):
    img = JPEGS[0].read_bytes()
    (tmp_path / "img.jpg").write_bytes(img)
    # Baseline: the same kind of run on three good rows.
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"id": f"g{i}", "image": "img.jpg"}) + "\n" for i in range(3)))
    r, base_mb = peak_rss_mb(caption_args(good, tmp_path / "o0"))
    assert r.returncode == 0, r.stderr[-3000:]

    # A 100 MB JSONL line between two good ones.
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        f.write(json.dumps({"image": "img.jpg"}) + "\n")
        f.write('{"image": "img.jpg", "pad": "')
        chunk = "x" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write('"}\n')
        f.write(json.dumps({"image": "img.jpg"}) + "\n")
    r, mb = peak_rss_mb(caption_args(big, tmp_path / "o1"))
    print(f"peak RSS: baseline {base_mb:.0f} MB, 100 MB JSONL line {mb:.0f} MB")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = by_id(jsonl_rows(tmp_path / "o1"))
    assert set(rows) == {"big.jsonl:1", "big.jsonl:2", "big.jsonl:3"}
    assert rows["big.jsonl:1"]["error"] is None and rows["big.jsonl:3"]["error"] is None
    assert f"{big}:2" in rows["big.jsonl:2"]["error"]
    assert "limit of 1048576 bytes" in rows["big.jsonl:2"]["error"]
    assert mb < base_mb + 48, f"peak RSS {mb:.0f} MB, baseline {base_mb:.0f} MB"

    # A CSV record with 10^6 columns (past the record limit) and one with
    # 20,000 (past the column limit), between good ones.
    wide = tmp_path / "wide.csv"
    with open(wide, "w") as f:
        f.write("image,note\nimg.jpg,ok\n")
        f.write("img.jpg" + ",x" * 10**6 + "\n")
        f.write("img.jpg" + "," * 20000 + "\n")
        f.write("img.jpg,ok\n")
    r, mb = peak_rss_mb(caption_args(wide, tmp_path / "o2"))
    print(f"peak RSS: baseline {base_mb:.0f} MB, CSV of 10^6 columns {mb:.0f} MB")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = by_id(jsonl_rows(tmp_path / "o2"))
    assert rows["wide.csv:2"]["error"] is None and rows["wide.csv:5"]["error"] is None
    assert "longer than the limit of 1048576 bytes" in rows["wide.csv:3"]["error"]
    assert "more than 10000 fields" in rows["wide.csv:4"]["error"]
    assert mb < base_mb + 48, f"peak RSS {mb:.0f} MB, baseline {base_mb:.0f} MB"

    # Symlink loops in an input folder: never followed as folders; as files,
    # failed rows naming them.
    d = tmp_path / "loops"
    d.mkdir()
    (d / "ok.jpg").write_bytes(img)
    (d / "up").symlink_to("..")
    (d / "self").symlink_to(".")
    (d / "self.jpg").symlink_to("self.jpg")
    (d / "ping.jpg").symlink_to("pong.jpg")
    (d / "pong.jpg").symlink_to("ping.jpg")
    (d / "dir.jpg").symlink_to(".")
    r = run(sluice, d, tmp_path / "o3")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = by_id(jsonl_rows(tmp_path / "o3"))
    assert set(rows) == {"ok.jpg", "self.jpg", "ping.jpg", "pong.jpg"}
    assert rows["ok.jpg"]["error"] is None
    for name in ("self.jpg", "ping.jpg", "pong.jpg"):
        assert rows[name]["error"] and str(d / name) in rows[name]["error"], rows[name]
    # A link to a folder, whatever its name, is a folder: not followed, said.
    for name in ("up", "self", "dir.jpg"):
        assert f"'{d / name}' is a symlink to a folder: not followed" in r.stderr, r.stderr

    # A tar whose member names climb out or are absolute: they are ids only,
    # nothing is written under those names anywhere.
    (tmp_path / "t").mkdir()
    tar_path = tmp_path / "t" / "evil.tar"
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("../escape.jpg", "../escape.json", "/tmp/sluice-abs-escape.jpg",
                     "a/../../up.jpg", "./fine.jpg"):
            add(tar, name, img if name.endswith(".jpg") else b'{"k": 1}')
    out = tmp_path / "t" / "out"
    before = set(tmp_path.rglob("*"))
    r = run(sluice, tar_path, out)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = by_id(jsonl_rows(out))
    assert set(rows) == {"evil.tar/../escape", "evil.tar//tmp/sluice-abs-escape",
                         "evil.tar/a/../../up", "evil.tar/./fine"}
    assert rows["evil.tar/../escape"]["k"] == 1
    created = {p for p in set(tmp_path.rglob("*")) - before if out not in p.parents}
    assert created == {out}, created
    assert not pathlib.Path("/tmp/sluice-abs-escape.jpg").exists()
    assert all(p.name.startswith(("part-", "_summary", "_report", "_metrics", "_sluice_ledger"))
               for p in out.iterdir()), sorted(out.iterdir())


def test_a_folder_of_a_datasets_files_is_read_as_them_or_said(sluice, tmp_path):
    """A Parquet dataset is a folder of files: Spark names it 'out.parquet',
    a Hugging Face download is 'data/train-*.parquet'. It was read as a
    folder of images: no rows, exit 0, whatever --input-format said. Now a
    folder named for a kind, or under --input-format KIND, is the files of
    that kind under it (sorted, depth first; Spark's _SUCCESS, _temporary/
    and .crc files left out), and a folder of images that holds none but a
    dataset's files is one failed row saying how to read them."""
    spark = tmp_path / "out.parquet"
    (spark / "_temporary" / "0").mkdir(parents=True)
    pq.write_table(hf_table(JPEGS[:2], 0), spark / "part-00000-c1.snappy.parquet")
    pq.write_table(hf_table(JPEGS[2:4], 2), spark / "part-00001-c1.snappy.parquet")
    pq.write_table(hf_table(JPEGS[:1], 9), spark / "_temporary" / "0" / "part-00002-c1.parquet")
    (spark / "_SUCCESS").write_bytes(b"")
    (spark / ".part-00000-c1.snappy.parquet.crc").write_bytes(b"crc")
    r = run(sluice, spark, tmp_path / "o1")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = by_id(jsonl_rows(tmp_path / "o1"))
    assert sorted(r_["label"] for r_ in rows.values()) == [0, 1, 2, 3]
    assert all(r_["error"] is None for r_ in rows.values()), rows
    assert "part-00001-c1.snappy.parquet:1" in rows, sorted(rows)
    # Named as a shell completes it, with a '/': the same (it was a folder
    # of images: its name's kind was read from the name with the '/').
    r = run(sluice, f"{spark}/", tmp_path / "o1s")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(by_id(jsonl_rows(tmp_path / "o1s"))) == sorted(rows)

    hf = tmp_path / "hub-download"
    (hf / "data").mkdir(parents=True)
    pq.write_table(hf_table(JPEGS[:3], 0), hf / "data" / "train-00000-of-00001.parquet")
    (hf / "README.md").write_text("# a dataset card\n")
    (hf / "_temporary" / "0").mkdir(parents=True)  # a writer's leftovers: not counted
    pq.write_table(hf_table(JPEGS[:1], 9), hf / "_temporary" / "0" / "part-00000.parquet")
    # As a folder of images: one failed row naming the way, not nothing.
    r = run(sluice, hf, tmp_path / "o2")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = jsonl_rows(tmp_path / "o2")
    assert len(rows) == 1, rows
    assert "holds no image or video files, but 1 parquet file" in rows[0]["error"], rows
    assert "data/train-00000-of-00001.parquet" in rows[0]["error"], rows
    assert "--input-format parquet" in rows[0]["error"], rows
    # As it says: the Parquet files under it.
    r = run(sluice, hf, tmp_path / "o3", "--input-format", "parquet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(r_["label"] for r_ in jsonl_rows(tmp_path / "o3")) == [0, 1, 2]
    # A kind the folder holds none of stops the command, naming both.
    r = run(sluice, hf, tmp_path / "o4", "--input-format", "webdataset")
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"input folder '{hf}' holds no webdataset files" in r.stderr, r.stderr
    # A Hugging Face DatasetDict saved to disk: its .json metadata sorts
    # first, but its rows are the .arrow files.
    saved = tmp_path / "saved"
    for split in ("test", "train"):
        (saved / split).mkdir(parents=True)
        (saved / split / "dataset_info.json").write_text("{}")
        (saved / split / "state.json").write_text("{}")
        with pa.ipc.new_stream(saved / split / "data-00000-of-00001.arrow",
                               hf_table(JPEGS[:2], 0).schema) as w:
            w.write_table(hf_table(JPEGS[:2], 0))
    (saved / "dataset_dict.json").write_text('{"splits": ["test", "train"]}')
    r = run(sluice, saved, tmp_path / "o6")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = jsonl_rows(tmp_path / "o6")
    assert len(rows) == 1 and "but 2 arrow files ('test/data-00000-of-00001.arrow', ...): " \
        "pass --input-format arrow" in rows[0]["error"], rows
    r = run(sluice, saved, tmp_path / "o7", "--input-format", "arrow")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(by_id(jsonl_rows(tmp_path / "o7"))) == [
        "test/data-00000-of-00001.arrow:0", "test/data-00000-of-00001.arrow:1",
        "train/data-00000-of-00001.arrow:0", "train/data-00000-of-00001.arrow:1"]
    # A folder of images beside a manifest is still its images.
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    (imgs / "metadata.jsonl").write_text('{"file_name": "a.jpg"}\n')
    r = run(sluice, imgs, tmp_path / "o5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [r_["id"] for r_ in jsonl_rows(tmp_path / "o5")] == ["a.jpg"]
