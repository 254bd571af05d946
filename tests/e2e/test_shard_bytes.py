"""--shard-bytes (docs/output.md "Shards"): a part is cut once it holds
SIZE bytes as well as every --shard-rows rows, so a row that passes SIZE is
its part's last: in JSONL (rows made large by a pass-through column),
Parquet with image bytes and WebDataset shards, every part but the last
reaches SIZE (JSONL) and none exceeds it by more than one row (plus a
Parquet footer, or the block libarchive holds back), and every input is in
exactly one part."""
import json
import tarfile

import pytest

from conftest import SAMPLES, sample_copies

QUIET = ("--max-tokens", "2", "--metrics-addr", "off", "--show", "0", "--ordered")
MB = 1 << 20


def test_jsonl_parts_are_cut_by_bytes(sluice, tmp_path):
    image = SAMPLES / "variants" / "chelsea_thumb48.jpg"
    manifest = tmp_path / "m.jsonl"
    with open(manifest, "w") as f:
        for i in range(60):  # rows of ~40-80 KB: a pass-through column
            f.write(json.dumps({"image": str(image), "note": "x" * (40_000 + 700 * i)}) + "\n")
    out = tmp_path / "out"
    r = sluice.caption(manifest, out, *QUIET, "--shard-bytes", "1M")
    assert r.returncode == 0, r.stderr
    parts = sorted(out.glob("part-*.jsonl"))
    lines = [part.read_bytes().splitlines(keepends=True) for part in parts]
    assert len(parts) > 2
    for part, rows in zip(parts[:-1], lines[:-1]):
        size = part.stat().st_size
        assert size >= MB, (part.name, size)
        assert size - len(rows[-1]) < MB  # cut right after the row that passed it
    ids = [json.loads(x)["id"] for part in lines for x in part]
    assert sorted(ids) == sorted(f"m.jsonl:{k}" for k in range(1, 61))
    # --shard-rows still cuts first when it comes first
    r = sluice.caption(manifest, tmp_path / "rows", *QUIET, "--shard-bytes", "1G",
                       "--shard-rows", "7")
    assert r.returncode == 0, r.stderr
    counts = [len(p.read_text().splitlines()) for p in sorted((tmp_path / "rows").glob("part-*"))]
    assert counts == [7] * 8 + [4]


@pytest.mark.parametrize("fmt,ext", [("parquet", "parquet"), ("webdataset", "tar")])
def test_parts_with_image_bytes_stay_near_the_size(sluice, tmp_path, fmt, ext):
    src = tmp_path / "in"
    n = sample_copies(src, 6)  # ~5.5 MB of images
    files = sorted(p for p in src.rglob("*") if p.is_symlink())
    out = tmp_path / "out"
    r = sluice.caption(src, out, *QUIET, "--format", fmt, "--include-image-bytes",
                       "--shard-bytes", "1M")
    assert r.returncode == 0, r.stderr
    parts = sorted(out.glob(f"part-*.{ext}"))
    biggest = max(p.stat().st_size for p in files)
    assert len(parts) >= 4
    slack = 64 << 10  # a Parquet footer and page headers; libarchive's held-back block
    for part in parts:
        assert part.stat().st_size < MB + biggest + slack, (part.name, part.stat().st_size)
    ids = []
    for part in parts:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            ids += pq.read_table(part, columns=["id"]).column("id").to_pylist()
        else:
            with tarfile.open(part) as t:
                ids += [json.loads(t.extractfile(m).read())["id"] for m in t.getmembers()
                        if m.name.endswith(".json")]
    assert len(ids) == n
    assert sorted(ids) == sorted(str(p.relative_to(src)) for p in files)
    # Without the flag, the same rows make one part (10,000 rows a part).
    r = sluice.caption(src, tmp_path / "one", *QUIET, "--format", fmt, "--include-image-bytes")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "one").glob(f"part-*.{ext}"))) == 1
