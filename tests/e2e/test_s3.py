"""End-to-end tests of object storage (io/s3.h, docs/inputs.md "S3") against
a real S3-compatible server: moto in server mode, started here on a free
port. The module through tests/tools/s3_tool (PUT, ranged GET, multipart
upload, listing across pages, errors naming the object and never the
secret), then the caption job reading a folder of images from a bucket and
a local manifest naming s3:// images: every image once, ids from the keys,
a corrupt object failed with a message naming its URL. Parquet files and
tar shards in a bucket read by ranged GETs (through a proxy that logs
them), and a killed run's unfinished multipart upload aborted by the next.

moto checks no signature, so what these prove about signing is that
libcurl's SigV4 requests are accepted by an S3 implementation; AWS itself
was not reachable from this machine."""
import json
import shutil
import signal
import os
import subprocess
import time
from urllib.parse import parse_qs

import pytest

from conftest import REPO, SAMPLES, read_rows, run_beside_a_holder, sample_images, wds_shard
from s3_store import SECRET, CountingProxy, moto_store

@pytest.fixture(scope="module")
def store():
    with moto_store() as s:
        yield s


def tool(env, *args, binary=False):
    exe = os.environ.get("SLUICE_S3_TOOL", str(REPO / "build" / "tests" / "tools" / "s3_tool"))
    return subprocess.run([exe, *map(str, args)], env=env, capture_output=True,
                          text=not binary, timeout=120)


def test_put_get_ranges_multipart_and_errors(store, tmp_path):
    env, client = store
    client.create_bucket(Bucket="mod")
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(70_000))
    assert tool(env, "put", small, "s3://mod/dir/small.bin").returncode == 0
    got = tool(env, "get", "s3://mod/dir/small.bin", binary=True)
    assert got.returncode == 0 and got.stdout == small.read_bytes()
    part = tool(env, "get", "s3://mod/dir/small.bin", 1000, 64, binary=True)
    assert part.stdout == small.read_bytes()[1000:1064]
    # 12 MB in 5 MiB parts: three parts, put together by the store.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12_000_000))
    assert tool(env, "upload", big, "s3://mod/dir/big.bin", 5 << 20).returncode == 0
    head = client.head_object(Bucket="mod", Key="dir/big.bin")
    assert head["ContentLength"] == 12_000_000
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart object
    got = tool(env, "get", "s3://mod/dir/big.bin", binary=True)
    assert got.stdout == big.read_bytes()
    # A key with characters that must be escaped in the URL.
    odd = "dir/a b+c%d é.bin"
    assert tool(env, "put", small, f"s3://mod/{odd}").returncode == 0
    assert client.get_object(Bucket="mod", Key=odd)["Body"].read() == small.read_bytes()
    # Errors name the object and the store's error code, never the secret.
    missing = tool(env, "get", "s3://mod/dir/none.bin")
    assert missing.returncode == 1
    assert "s3://mod/dir/none.bin" in missing.stderr and "NoSuchKey" in missing.stderr
    nobucket = tool(env, "get", "s3://no-such-bucket/x")
    assert "NoSuchBucket" in nobucket.stderr
    for r in (missing, nobucket):
        assert SECRET not in r.stderr
    assert tool(env, "rm", "s3://mod/dir/small.bin").returncode == 0
    assert tool(env, "rm", "s3://mod/dir/small.bin").returncode == 0  # already gone: fine
    bad = tool(env, "get", "s3://Bad_Bucket/x")
    assert bad.returncode == 1 and "bucket name" in bad.stderr


def test_listing_goes_across_pages(store):
    env, client = store
    client.create_bucket(Bucket="many")
    keys = [f"p/{i:05d}.jpg" for i in range(2345)]  # three pages of 1,000
    for k in keys:
        client.put_object(Bucket="many", Key=k, Body=b"x")
    client.put_object(Bucket="many", Key="p2/outside.jpg", Body=b"x")
    r = tool(env, "ls", "s3://many/p/")
    assert r.returncode == 0, r.stderr
    listed = [line.split(" ", 1)[1] for line in r.stdout.splitlines()]
    assert listed == keys


def test_caption_a_folder_in_a_bucket(store, sluice, tmp_path):
    env, client = store
    client.create_bucket(Bucket="imgs")
    images = sample_images()[:4]
    for i, p in enumerate(images):
        client.put_object(Bucket="imgs", Key=f"set/{'sub/' if i % 2 else ''}{p.name}",
                          Body=p.read_bytes())
    client.put_object(Bucket="imgs", Key="set/notes.txt", Body=b"not an image")
    client.put_object(Bucket="imgs", Key="set/broken.jpg", Body=b"\xff\xd8\xff\xe0 not a jpeg")
    client.put_object(Bucket="imgs", Key="settled/other.jpg", Body=images[0].read_bytes())
    out = tmp_path / "out"
    r = subprocess.run([str(sluice.binary), "caption", "s3://imgs/set", "-o", str(out),
                        "--model", str(REPO / "models/tiny/model.gguf"),
                        "--mmproj", str(REPO / "models/tiny/mmproj.gguf"),
                        "--max-tokens", "4", "--metrics-addr", "off", "--progress-every", "0.05"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-3000:]  # 3: done, some rows failed
    # The count pass lists the prefix a second time, beside the run: each
    # image is counted once all the same.
    assert "5 of 5 (100%)" in final_progress(r.stderr)
    rows = {row["id"]: row for row in read_rows(out)}
    want = {f"{'sub/' if i % 2 else ''}{p.name}" for i, p in enumerate(images)} | {"broken.jpg"}
    assert set(rows) == want  # not notes.txt, not settled/ (a prefix is a folder)
    assert rows["broken.jpg"]["error"] and "s3://imgs/set/broken.jpg" in rows["broken.jpg"]["error"]
    for i, p in enumerate(images):
        row = rows[f"{'sub/' if i % 2 else ''}{p.name}"]
        assert row["error"] is None and row["caption"] is not None
        assert row["path"].startswith("s3://imgs/set/")
    assert SECRET not in r.stderr

    # A local manifest naming s3:// images reads them the same way.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"m{i}", "url": f"s3://imgs/set/{p.name}"})
                                + "\n" for i, p in enumerate(images) if i % 2 == 0) +
                        json.dumps({"id": "gone", "url": "s3://imgs/set/none.jpg"}) + "\n")
    out2 = tmp_path / "out2"
    r = subprocess.run([str(sluice.binary), "caption", str(manifest), "-o", str(out2),
                        "--model", str(REPO / "models/tiny/model.gguf"),
                        "--mmproj", str(REPO / "models/tiny/mmproj.gguf"),
                        "--max-tokens", "4", "--metrics-addr", "off"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out2)}
    assert set(rows) == {"m0", "m2", "gone"}
    assert rows["m0"]["error"] is None
    assert "NoSuchKey" in rows["gone"]["error"] and "s3://imgs/set/none.jpg" in rows["gone"]["error"]


def test_a_prefix_of_parquet_files_read_as_images_says_how_to_read_them(store, sluice, tmp_path):
    """s3://b/dataset/ holding a dataset's Parquet files and no image was
    read as a folder of images: no rows, exit 0. Now one failed row names
    the prefix, the files and --input-format parquet."""
    env, client = store
    client.create_bucket(Bucket="pqset")
    for i in range(2):
        client.put_object(Bucket="pqset", Key=f"ds/data/train-{i:05d}.parquet", Body=b"PAR1")
    client.put_object(Bucket="pqset", Key="ds/README.md", Body=b"# card")
    r = caption_env(sluice, env, "s3://pqset/ds/", "-o", tmp_path / "out")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["id"] == "ds/", rows
    assert ("folder 's3://pqset/ds/' holds no image or video files, but 2 parquet files "
            "('data/train-00000.parquet', ...): pass --input-format parquet") in rows[0]["error"], rows


def dataset_file(kind, url, key):
    """One file of `kind` whose one row's image is the object `url`; `key`
    names a tar's sample."""
    import io
    import pyarrow as pa
    import pyarrow.parquet as pq
    if kind == "jsonl":
        return (json.dumps({"image": url}) + "\n").encode()
    if kind == "json":
        return json.dumps([{"image": url}]).encode()
    if kind == "csv":
        return f"image\n{url}\n".encode()
    if kind == "webdataset":
        return wds_shard([(f"{key}.jpg", sample_images()[0].read_bytes())])
    table = pa.table({"image": [url]})
    out = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, out)
    else:
        with pa.ipc.new_stream(out, table.schema) as w:
            w.write_table(table)
    return out.getvalue()


DATASET_EXT = {"jsonl": "jsonl", "json": "json", "csv": "csv", "webdataset": "tar",
               "parquet": "parquet", "arrow": "arrow"}


@pytest.mark.parametrize("kind", list(DATASET_EXT))
def test_a_prefix_of_a_datasets_files_is_read_as_the_local_folder_is(store, sluice, tmp_path,
                                                                    kind):
    """s3://b/ds/ under --input-format KIND (or named for the kind:
    s3://b/out.parquet/, as Spark writes a table) is the files of that kind
    under the prefix, as a local folder is: Spark's _SUCCESS, _temporary/
    and .crc files and every '.'/'_' path segment left out, in the local
    walk's order (a subfolder's files before a name that sorts after it but
    before its '/': S3 lists sub-x before sub/), and a prefix holding none
    stops the command (exit 2) naming the prefix and the kind. The prefix
    was read as the one object s3://b/ds/: a NoSuchKey row, nothing read."""
    env, client = store
    bucket = f"ds-{kind}"
    client.create_bucket(Bucket=bucket)
    image = f"s3://{bucket}/img/a.jpg"
    client.put_object(Bucket=bucket, Key="img/a.jpg", Body=sample_images()[0].read_bytes())
    ext = DATASET_EXT[kind]
    taken = [f"part-00000.{ext}", f"part-00001.{ext}", f"sub/part-00002.{ext}", f"sub-x.{ext}"]
    left_out = ["_SUCCESS", f"_temporary/0/part-00009.{ext}", f".part-00000.{ext}.crc",
                f".hidden.{ext}", f"_meta/part-00008.{ext}", f"sub/.x/part-00007.{ext}",
                "README.md"]
    local = tmp_path / "local"
    for i, rel in enumerate(taken + left_out):
        body = dataset_file(kind, image, f"s{i}")
        for key in (f"ds/{rel}", f"out.{ext}/{rel}"):
            client.put_object(Bucket=bucket, Key=key, Body=body)
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(body)

    def ids(inputs, out, *args):
        r = caption_env(sluice, env, *inputs, "-o", tmp_path / f"o-{out}", "--dry-run", *args)
        assert r.returncode == 0, (inputs, r.stderr[-3000:])
        rows = read_rows(tmp_path / f"o-{out}")
        assert all(row["error"] is None for row in rows), rows
        return sorted(row["id"] for row in rows)

    want = ids([local], "local", "--input-format", kind)
    assert len(want) == len(taken), want
    assert all(any(i.startswith(rel) for rel in taken) for i in want), want
    assert ids([f"s3://{bucket}/ds/"], "prefix", "--input-format", kind) == want
    assert ids([f"s3://{bucket}/out.{ext}/"], "named") == want
    # Files in the walk's order: the third file is sub/'s, in either place.
    third = ids([local], "local-2", "--input-format", kind, "--input-shard", "2/4")
    assert len(third) == 1 and third[0].startswith(f"sub/part-00002.{ext}"), third
    assert ids([f"s3://{bucket}/ds/"], "prefix-2", "--input-format", kind,
               "--input-shard", "2/4") == third
    # None of the kind: the command stops, naming the prefix and the kind.
    other = "csv" if kind != "csv" else "parquet"
    r = caption_env(sluice, env, f"s3://{bucket}/ds/", "-o", tmp_path / "none",
                    "--input-format", other)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"input folder 's3://{bucket}/ds/' holds no {other} files" in r.stderr, r.stderr


def test_hive_partitions_under_a_prefix_are_columns(store, sluice, tmp_path):
    """A partitioned table in a bucket (s3://b/t.parquet/lang=en/...) gives
    its rows the partition columns as a local folder does, the prefix named
    with or without its '/'; the bucket's own folders above it give none."""
    env, client = store
    client.create_bucket(Bucket="hive")
    image = "s3://hive/img/a.jpg"
    client.put_object(Bucket="hive", Key="img/a.jpg", Body=sample_images()[0].read_bytes())
    for folder in ("lang=en", "lang=pt%20BR", "lang=__HIVE_DEFAULT_PARTITION__"):
        client.put_object(Bucket="hive", Key=f"run=7/t.parquet/{folder}/part-0.parquet",
                          Body=dataset_file("parquet", image, "x"))
    for name in ("s3://hive/run=7/t.parquet/", "s3://hive/run=7/t.parquet"):
        out = tmp_path / f"o{len(name)}"
        r = caption_env(sluice, env, name, "-o", out, "--dry-run")
        assert r.returncode == 0, r.stderr[-3000:]
        rows = read_rows(out)
        assert sorted((row["lang"] or "", "run" in row) for row in rows) == \
            [("", False), ("en", False), ("pt BR", False)], rows


def test_a_name_without_its_slash_is_the_prefix_when_no_object_has_it(store, sluice, tmp_path):
    """s3://b/data with no object 'data' but objects under data/ is the
    folder data/, as `aws s3 ls` and pyarrow take it, under --input-format
    (and a prefix named for its kind, Spark's out.jsonl) and for images
    (set.v1, whose dot made it a file of no kind: exit 2); it was one GET,
    NoSuchKey. An object of that exact key still wins over the prefix, and
    a name that is neither is one failed row naming it (an image folder
    that was nothing gave no rows and exit 0)."""
    env, client = store
    client.create_bucket(Bucket="bare")
    image = sample_images()[0].read_bytes()
    client.put_object(Bucket="bare", Key="img/a.jpg", Body=image)
    row = (json.dumps({"image": "s3://bare/img/a.jpg"}) + "\n").encode()
    for key in ("data/x.jsonl", "data/sub/y.jsonl", "data-1.jsonl", "out.jsonl/part-0.jsonl",
                "out.jsonl/_SUCCESS", "exact", "set.v1/a.jpg", "set.v1/sub/b.jpg"):
        client.put_object(Bucket="bare", Key=key, Body=image if key.endswith(".jpg") else row)
    client.put_object(Bucket="bare", Key="exact/x.jsonl", Body=b"{not json\n")

    def rows(out, *args):
        r = caption_env(sluice, env, *args, "-o", tmp_path / out, "--dry-run")
        return r, {row["id"]: row["error"] for row in read_rows(tmp_path / out)}

    r, bare = rows("bare", "s3://bare/data", "--input-format", "jsonl")
    assert r.returncode == 0, r.stderr[-3000:]
    assert bare == {"x.jsonl:1": None, "sub/y.jsonl:1": None}, bare
    assert rows("slash", "s3://bare/data/", "--input-format", "jsonl")[1] == bare
    r, spark = rows("spark", "s3://bare/out.jsonl")
    assert r.returncode == 0 and spark == {"part-0.jsonl:1": None}, (spark, r.stderr[-3000:])
    r, exact = rows("exact", "s3://bare/exact", "--input-format", "jsonl")
    assert r.returncode == 0 and exact == {"exact:1": None}, (exact, r.stderr[-3000:])
    r, images = rows("images", "s3://bare/set.v1")
    assert r.returncode == 0 and images == {"a.jpg": None, "sub/b.jpg": None}, \
        (images, r.stderr[-3000:])
    r, none = rows("none", "s3://bare/none")
    assert r.returncode == 3 and list(none) == ["none/"], (none, r.stderr[-3000:])
    assert "nothing in the store at 's3://bare/none': no object of that name, none under " \
        "'s3://bare/none/'" in none["none/"], none
    r, none = rows("none-jsonl", "s3://bare/none", "--input-format", "jsonl")
    assert r.returncode == 3 and len(none) == 1, (none, r.stderr[-3000:])
    assert "'s3://bare/none'" in list(none.values())[0] and "NoSuchKey" in list(none.values())[0]


def test_a_folder_of_images_in_a_bucket_is_read_in_the_local_walks_order(store, sluice,
                                                                          tmp_path):
    """The same tree of images on disk and under an s3:// prefix gives the
    same rows in the same order (--ordered): the local walk's, sorted names
    depth first (sub/ before sub-x/, sub.jpg and 'sub x/'), where S3 lists
    keys byte-wise ('-', '.' and ' ' sort before '/'). The rows came in
    S3's order. 1,100 img-NNNN.jpg keys wait for img/ past the 1,000 held
    back: img/ is then listed on its own, and its keys still come first,
    once each, as do img-00007/'s, between img-00006.jpg and img-00007.jpg."""
    env, client = store
    client.create_bucket(Bucket="walk")
    image = sample_images()[0].read_bytes()
    rels = ["sub/b.jpg", "sub-x/a.jpg", "sub.jpg", "sub x/c.jpg", "sub/sub-1/d.jpg",
            "sub/sub/e.jpg", "sub/sub.jpg", "a b/f.jpg", "a/g.jpg", "a.b/h.jpg", "a.jpg",
            "z/y/x.jpg", "z/y-1.jpg", "z/y.1/w.jpg", "img/q.jpg", "img/q-r/s.jpg",
            "img/q/t.jpg", "img-00007/u.jpg", "img.jpg"]
    rels += [f"img-{i:05d}.jpg" for i in range(1100)]
    local = tmp_path / "tree"
    for rel in rels:
        client.put_object(Bucket="walk", Key=f"set/{rel}", Body=image)
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(image)

    def ids(src, out):
        r = caption_env(sluice, env, src, "-o", tmp_path / out, "--dry-run", "--ordered")
        assert r.returncode == 0, r.stderr[-3000:]
        return [row["id"] for row in read_rows(tmp_path / out)]

    want = ids(local, "local")
    assert sorted(want) == sorted(rels) and want[:2] == ["a/g.jpg", "a b/f.jpg"], want[:20]
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        env = dict(env, AWS_ENDPOINT_URL=proxy.url)
        assert ids("s3://walk/set/", "bucket") == want
        # The held-back keys are bounded: img/ was listed on its own by
        # the run's walk, not reached by holding all 1,100 img-NNNN.jpg
        # until the listing came to it. The progress count needs no order:
        # one plain listing of set/ (its 1,119 keys, two pages), where its
        # own walk listed img/ again.
        prefixes = [parse_qs(q).get("prefix", [None])[0] for (m, path, *_), q
                    in zip(proxy.log, proxy.queries) if m == "GET" and path.rstrip("/") == "/walk"]
        assert sorted(prefixes) == ["set/"] * 4 + ["set/img/"], prefixes
        prom = (tmp_path / "bucket" / "_metrics.prom").read_text()
        assert f"\nsluice_input_rows {len(rels)}\n" in prom, prom  # and it counts them all
    finally:
        proxy.close()


def caption_env(sluice, env, *args):
    return subprocess.run([str(sluice.binary), "caption", *map(str, args),
                           "--model", str(REPO / "models/tiny/model.gguf"),
                           "--mmproj", str(REPO / "models/tiny/mmproj.gguf"),
                           "--max-tokens", "4", "--metrics-addr", "off"],
                          env=env, capture_output=True, text=True, timeout=600)


def test_manifests_tar_shards_and_parquet_in_a_bucket(store, sluice, tmp_path):
    """Files in a bucket, one at a time (a manifest from a local copy,
    tar shards and Parquet by ranged reads): a manifest's relative paths
    resolve in its folder in the bucket, and messages name the object,
    never a copy."""
    import io
    import tarfile
    import pyarrow as pa
    import pyarrow.parquet as pq
    env, client = store
    # A TMPDIR of the test's own: what the runs leave there is theirs.
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = dict(env, TMPDIR=str(tmpdir))
    client.create_bucket(Bucket="files")
    images = sample_images()[:3]
    for p in images:
        client.put_object(Bucket="files", Key=f"data/img/{p.name}", Body=p.read_bytes())
    lines = [json.dumps({"image": f"img/{p.name}", "label": i}) for i, p in enumerate(images)]
    lines.insert(1, "{not json")
    client.put_object(Bucket="files", Key="data/list.jsonl", Body="\n".join(lines) + "\n")
    out = tmp_path / "m"
    r = caption_env(sluice, env, "s3://files/data/list.jsonl", "-o", out)
    assert r.returncode == 3, r.stderr[-3000:]
    rows = read_rows(out)
    ok = [row for row in rows if not row["error"]]
    assert sorted(row["label"] for row in ok) == [0, 1, 2]
    assert all(row["path"].startswith("s3://files/data/img/") for row in ok)
    bad = [row for row in rows if row["error"]]
    assert len(bad) == 1 and "list.jsonl:2" in bad[0]["id"] + bad[0]["error"]
    assert "sluice-input-" not in json.dumps(rows)  # the copy is never named
    # The same manifest gzipped: decompressed as it streams from the bucket.
    import gzip
    client.put_object(Bucket="files", Key="data/list.jsonl.gz", Body=gzip.compress(("\n".join(lines) + "\n").encode()))
    r = caption_env(sluice, env, "s3://files/data/list.jsonl.gz", "-o", tmp_path / "mz")
    assert r.returncode == 3, r.stderr[-3000:]
    zrows = {row["id"]: row for row in read_rows(tmp_path / "mz")}
    assert sorted(row["label"] for row in zrows.values() if not row["error"]) == [0, 1, 2]
    assert "list.jsonl.gz:2" in zrows and zrows["list.jsonl.gz:2"]["error"]

    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k, p in enumerate(images):
            for name, data in ((f"s{k}.jpg", p.read_bytes()), (f"s{k}.txt", f"alt {k}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    client.put_object(Bucket="files", Key="wds/data-000.tar", Body=shard.getvalue())
    client.put_object(Bucket="files", Key="wds/data-001.tar", Body=b"not a tar at all" * 40)
    out = tmp_path / "w"
    r = caption_env(sluice, env, "s3://files/wds/data-{000..001}.tar", "-o", out)
    assert r.returncode == 3, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out)}
    assert {i for i in rows if not rows[i]["error"]} == {f"data-000.tar/s{k}" for k in range(3)}
    broken = [row for row in rows.values() if row["error"]]
    assert broken and all("s3://files/wds/data-001.tar" in row["error"] for row in broken)
    assert "sluice-input-" not in json.dumps(list(rows.values()))
    # Gzipped in the bucket: inflated as it streams; cut short, the samples
    # before the cut are kept and the break is one row.
    packed = gzip.compress(shard.getvalue(), mtime=0)
    client.put_object(Bucket="files", Key="wds/z-000.tar.gz", Body=packed)
    client.put_object(Bucket="files", Key="wds/z-001.tar.gz", Body=packed[: len(packed) * 3 // 4])
    out = tmp_path / "wz"
    r = caption_env(sluice, env, "s3://files/wds/z-{000..001}.tar.gz", "-o", out)
    assert r.returncode == 3, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(out)}
    assert {i for i in rows if i.startswith("z-000") and not rows[i]["error"]} == \
        {f"z-000.tar.gz/s{k}" for k in range(3)}
    assert "z-001.tar.gz/s0" in rows and not rows["z-001.tar.gz/s0"]["error"]
    cut = [row for row in rows.values() if row["error"]]
    assert len(cut) == 1 and cut[0]["id"].startswith("z-001.tar.gz@") and \
        "truncated gzip input" in cut[0]["error"], cut

    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "label": pa.array(range(3), pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    client.put_object(Bucket="files", Key="pq/train.parquet", Body=buf.getvalue())
    out = tmp_path / "p"
    r = caption_env(sluice, env, "s3://files/pq/train.parquet", "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(out)
    assert sorted(row["label"] for row in rows) == [0, 1, 2]
    assert all(row["error"] is None for row in rows)
    # A missing object: one failed row naming it; the copies are gone.
    out = tmp_path / "x"
    r = caption_env(sluice, env, "s3://files/pq/none.parquet", "-o", out)
    assert r.returncode == 3
    rows = read_rows(out)
    assert len(rows) == 1 and "NoSuchKey" in rows[0]["error"]
    assert not list(tmpdir.iterdir())


def test_mixing_s3_and_local_inputs_is_refused(store, sluice, tmp_path):
    env, _ = store
    r = caption_env(sluice, env, "s3://imgs/set", tmp_path, "-o", tmp_path / "o")
    assert r.returncode == 2 and "mix s3:// and local" in r.stderr


def test_throttling_is_retried_and_refusals_are_not(tmp_path):
    """A stand-in store (here, not moto: moto does not throttle) answers
    503 SlowDown twice, then the object; and 403 AccessDenied to another
    key, which must not be retried. The requests arrive signed."""
    import http.server
    import threading
    seen = []

    class Store(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization", ""),
                         self.headers.get("x-amz-content-sha256", "")))
            if self.path == "/b/slow.bin" and sum(p == "/b/slow.bin" for p, _, _ in seen) <= 2:
                body, code = b"<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>", 503
            elif self.path == "/b/slow.bin":
                body, code = b"payload", 200
            else:
                body, code = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>", 403
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.server_address[1]}",
               AWS_REGION="eu-west-3")
    try:
        r = tool(env, "get", "s3://b/slow.bin")
        assert r.returncode == 0 and r.stdout == "payload", r.stderr
        assert [p for p, _, _ in seen] == ["/b/slow.bin"] * 3
        auth = seen[0][1]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIATESTKEY/")
        assert "/eu-west-3/s3/aws4_request" in auth and "Signature=" in auth
        assert SECRET not in auth
        assert seen[0][2] == "UNSIGNED-PAYLOAD"
        seen.clear()
        r = tool(env, "get", "s3://b/secret.bin")
        assert r.returncode == 1 and "AccessDenied" in r.stderr and SECRET not in r.stderr
        assert len(seen) == 1  # a refusal is final
    finally:
        server.shutdown()


def test_a_store_that_never_answers_is_bounded_and_the_bound_can_be_set(tmp_path):
    """A store that takes the connection and never answers held each
    request 6 tries of 60 s (a whole-transfer deadline), and nothing could
    shorten it. SLUICE_S3_TIMEOUT (seconds without a byte moving) and
    AWS_MAX_ATTEMPTS (tries) set the bound: 1 s and 2 tries fail in about
    2 s, naming the object. A slow store that keeps sending (5 s) is not
    cut off by a 2 s bound (a stall, not a deadline). A value out of
    range is refused naming the variable."""
    import socket
    import threading
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)  # the kernel accepts; nothing ever answers
    held = []

    class Slow(threading.Thread):
        def run(self):
            srv = self.srv
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                held.append(c)
                c.recv(65536)
                body = b"0123456789"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                for k in range(10):  # 5 s in all, a byte each 0.5 s
                    time.sleep(0.5)
                    c.sendall(body[k:k + 1])
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(4)
    t = Slow(daemon=True)
    t.srv = slow
    t.start()
    base = dict(os.environ, AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY=SECRET,
                AWS_REGION="us-east-1")
    try:
        env = dict(base, AWS_ENDPOINT_URL=f"http://127.0.0.1:{dead.getsockname()[1]}",
                   SLUICE_S3_TIMEOUT="1", AWS_MAX_ATTEMPTS="2")
        t0 = time.monotonic()
        r = tool(env, "get", "s3://b/k.bin")
        took = time.monotonic() - t0
        assert r.returncode == 1 and "s3://b/k.bin" in r.stderr, r.stderr
        assert 1.5 < took < 10, took
        env = dict(base, AWS_ENDPOINT_URL=f"http://127.0.0.1:{slow.getsockname()[1]}",
                   SLUICE_S3_TIMEOUT="2", AWS_MAX_ATTEMPTS="1")
        r = tool(env, "get", "s3://b/k.bin")
        assert r.returncode == 0 and r.stdout == "0123456789", r.stderr
        for var, value in (("SLUICE_S3_TIMEOUT", "soon"), ("SLUICE_S3_TIMEOUT", "0"),
                           ("AWS_MAX_ATTEMPTS", "0"), ("AWS_MAX_ATTEMPTS", "2x")):
            r = tool(dict(base, **{var: value}), "get", "s3://b/k.bin")
            assert r.returncode == 1 and f"{var} must be" in r.stderr, r.stderr
    finally:
        dead.close()
        slow.close()
        for c in held:
            c.close()


def objects(client, bucket, prefix):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def remote_ids(client, bucket, prefix):
    ids = []
    for key in objects(client, bucket, prefix):
        name = key[len(prefix):]
        if name.startswith("part-") and name.endswith(".jsonl"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            ids += [json.loads(line)["id"] for line in body.splitlines()]
    return ids


def image_folder(tmp_path, n):
    from conftest import sample_copies
    d = tmp_path / "in"
    sample_copies(d, n)
    return d, sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_output_to_a_bucket_and_resume_after_a_failed_upload(store, sluice, tmp_path):
    from collections import Counter
    env, client = store
    client.create_bucket(Bucket="outs")
    inputs, want = image_folder(tmp_path, 2)
    state = tmp_path / "state"
    args = (inputs, "-o", "s3://outs/run1/", "--state-dir", state, "--shard-rows", "3")
    # The second part's upload fails: the run stops; the first part stays.
    r = caption_env(sluice, dict(env, SLUICE_TEST_FAULTS="commit.upload=eio@2"), *args)
    assert r.returncode != 0 and "s3://outs/run1/part-00001.jsonl" in r.stderr, r.stderr[-2000:]
    assert objects(client, "outs", "run1/part-") == ["run1/part-00000.jsonl"]
    assert not list(state.glob("part-*"))  # parts never land in the state folder
    r = caption_env(sluice, env, *args)  # the same command: goes on
    assert r.returncode == 0, r.stderr[-2000:]
    assert Counter(remote_ids(client, "outs", "run1/")) == Counter(want)
    keys = objects(client, "outs", "run1/")
    assert "run1/_summary.json" in keys and "run1/_report.html" in keys
    summary = json.loads(client.get_object(Bucket="outs", Key="run1/_summary.json")["Body"].read())
    assert summary["rows"]["skipped"] == 3
    # Where the rows are: the bucket, and this run's parts (not the first's).
    assert summary["output_dir"] == "s3://outs/run1/"
    parts = [k.split("/")[-1] for k in objects(client, "outs", "run1/part-")]
    assert summary["output_files"] == [p for p in parts if p != "part-00000.jsonl"]
    assert (state / "_sluice_ledger.sqlite").exists()
    # Parquet to a bucket, read back by pyarrow through the store.
    out = "s3://outs/pq"
    r = caption_env(sluice, env, inputs, "-o", out, "--state-dir", tmp_path / "st2",
                    "--format", "parquet")
    assert r.returncode == 0, r.stderr[-2000:]
    import io
    import pyarrow.parquet as pq
    body = client.get_object(Bucket="outs", Key="pq/part-00000.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert sorted(table.column("id").to_pylist()) == want


def test_a_second_run_into_a_locked_output_names_the_bucket(store, sluice, tmp_path):
    """Two runs of one s3:// output with one state folder: the second is
    refused while the first holds the ledger's lock, and the message names
    the output's URL and the state folder (it named the state folder alone,
    a path the user never typed) and says what to do."""
    env, client = store
    client.create_bucket(Bucket="locks")
    inputs, _ = image_folder(tmp_path, 1)
    state = tmp_path / "state"
    args = [str(sluice.binary), "caption", str(inputs), "-o", "s3://locks/run/", "--state-dir",
            str(state), "--model", str(REPO / "models/tiny/model.gguf"),
            "--mmproj", str(REPO / "models/tiny/mmproj.gguf"), "--max-tokens", "4",
            "--metrics-addr", "off"]
    r = run_beside_a_holder(args, env)
    assert r.returncode == 75, r.stderr[-2000:]
    assert (f"output 's3://locks/run' is in use by another sluice run (its resume ledger, in "
            f"the state folder '{state}', is locked): wait for that run to end, or write to "
            "another prefix") in r.stderr, r.stderr[-2000:]


def bucket_args(sluice, inputs, url, state):
    return [str(sluice.binary), "caption", str(inputs), "-o", url, "--state-dir", str(state),
            "--model", str(REPO / "models/tiny/model.gguf"),
            "--mmproj", str(REPO / "models/tiny/mmproj.gguf"), "--max-tokens", "4",
            "--metrics-addr", "off"]


def start_held(args, env, ms):
    """A run started and waited for until its ledger is settled (its locks
    held), where it then waits `ms` milliseconds."""
    run = subprocess.Popen(args, env=dict(env, SLUICE_TEST_FAULTS="trace,ledger.reconciled="
                                                                  f"sleep:{ms}"),
                           stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in run.stderr:
        if "test fault point ledger.reconciled" in line:
            break
    return run


def test_two_runs_into_one_output_with_two_state_folders_do_not_mix(store, sluice, tmp_path):
    """Two runs of one s3:// output with different --state-dir: the ledger's
    lock (in each state folder) keeps neither out. The second was let in
    and wrote part-00000 (only the check before each upload stopped the
    first). Now the first holds the lock object in the bucket and the
    second is refused up front (exit 2), naming the holder's state folder
    and how to clear a lock a killed run left; the first then ends well
    and removes its lock. With the lock deleted by hand while the first
    runs (or a store that ignores the condition), the check before each
    upload is still there: the first stops (exit 1) naming the object, and
    the second's part stays whole."""
    from conftest import sample_copies
    env, client = store
    client.create_bucket(Bucket="twice")
    mine, theirs = tmp_path / "a", tmp_path / "b"
    sample_copies(mine, 1)
    sample_copies(theirs, 1)
    (theirs / "c000").rename(theirs / "theirs")  # other ids than mine's
    def args(inputs, state, prefix):
        return bucket_args(sluice, inputs, f"s3://twice/{prefix}", state)
    for prefix, unlock in (("run", False), ("bare", True)):
        # Run A has checked the bucket (no parts yet) and is stopped in its
        # pause until run B has ended: B must write part-00000 before A
        # uploads its own. The 15 s pause alone was the hold, and a B that
        # took longer (a loaded machine, ASan) lost the race for the number.
        a = start_held(args(mine, tmp_path / f"sa-{prefix}", prefix), env, 15000)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            lock = json.loads(client.get_object(Bucket="twice",
                                                Key=f"{prefix}/_sluice.lock")["Body"].read())
            assert lock["state_dir"] == str(tmp_path / f"sa-{prefix}"), lock
            if unlock:
                client.delete_object(Bucket="twice", Key=f"{prefix}/_sluice.lock")
            r = subprocess.run(args(theirs, tmp_path / f"sb-{prefix}", prefix), env=env,
                               capture_output=True, text=True, timeout=120)
            os.kill(a.pid, signal.SIGCONT)
            err = a.stderr.read()
            code = a.wait(timeout=120)
        finally:
            if a.poll() is None:
                a.kill()
        if not unlock:
            assert r.returncode == 75, r.stderr[-2000:]
            assert (f"output 's3://twice/run' is in use by another sluice run (its lock "
                    f"'s3://twice/run/_sluice.lock' names host") in r.stderr, r.stderr[-2000:]
            assert f"state folder '{tmp_path / 'sa-run'}'" in r.stderr, r.stderr[-2000:]
            assert "aws s3 rm s3://twice/run/_sluice.lock" in r.stderr, r.stderr[-2000:]
            assert code == 0, err[-2000:]
            assert sorted(remote_ids(client, "twice", "run/")) == \
                sorted(str(p.relative_to(mine)) for p in mine.rglob("*") if p.is_file())
            assert "run/_sluice.lock" not in objects(client, "twice", "run/")
            continue
        assert r.returncode == 0, r.stderr[-2000:]
        assert code == 1, err[-2000:]
        assert (f"'s3://twice/bare/part-00000.jsonl' is already in the bucket, and this run "
                f"(its state folder '{tmp_path / 'sa-bare'}') did not write it: another run is "
                "writing the same output with another --state-dir") in err, err[-2000:]
        assert sorted(remote_ids(client, "twice", "bare/")) == \
            sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*") if p.is_file())


def test_a_killed_runs_bucket_lock_is_taken_over_when_its_lease_ends(store, sluice, tmp_path):
    """A run killed by SIGKILL leaves its lock object in the bucket. A run
    from another state folder (another machine) is refused while the lease
    lasts, then takes the lock over once it has ended (a warning names the
    old holder) and ends well; the same command as the killed run's (same
    host, same state folder) takes it over at once: the ledger it now holds
    says the holder is gone. A lock is renewed while its run lasts longer
    than the lease."""
    env, client = store
    client.create_bucket(Bucket="lease")
    inputs, want = image_folder(tmp_path, 1)
    lenv = dict(env, SLUICE_S3_LOCK_LEASE="4")

    def args(state):
        return bucket_args(sluice, inputs, "s3://lease/run", state)

    def killed(state):
        a = start_held(args(state), lenv, 30000)
        first = client.get_object(Bucket="lease", Key="run/_sluice.lock")
        time.sleep(5)  # past one lease: renewed meanwhile
        renewed = client.get_object(Bucket="lease", Key="run/_sluice.lock")
        assert renewed["ETag"] != first["ETag"]
        assert json.loads(renewed["Body"].read())["expires"] > \
            json.loads(first["Body"].read())["expires"]
        a.kill()
        a.wait()
    killed(tmp_path / "sa")
    r = subprocess.run(args(tmp_path / "sb"), env=lenv, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 75 and "is in use by another sluice run" in r.stderr, r.stderr[-2000:]
    time.sleep(4.5)
    r = subprocess.run(args(tmp_path / "sb"), env=lenv, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over the lock of a run that did not renew it" in r.stderr, r.stderr[-2000:]
    assert sorted(remote_ids(client, "lease", "run/")) == sorted(want)
    assert "run/_sluice.lock" not in objects(client, "lease", "run/")
    # The same command as a killed run's, at once: no wait for the lease.
    killed(tmp_path / "sb")
    r = subprocess.run(args(tmp_path / "sb"), env=lenv, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over" not in r.stderr, r.stderr[-2000:]


def test_a_bucket_lock_is_judged_by_the_stores_clock_not_the_holders(store, sluice, tmp_path):
    """A lock just written by a live run on a machine whose clock is behind
    by more than the lease (its 'expires' already past by this machine's
    clock) is refused, not taken over: the lease runs from the object's
    Last-Modified by the store's Date. It was judged by 'expires' against
    this machine's clock, and a live run's lock was taken (exit 0). A lock
    written the same way as long ago as its lease is taken over."""
    env, client = store
    client.create_bucket(Bucket="skew")
    inputs, want = image_folder(tmp_path, 1)
    behind = int(time.time()) - 3600

    def lock(lease):
        client.put_object(Bucket="skew", Key="run/_sluice.lock", Body=json.dumps(
            {"host": "node7", "pid": 4242, "state_dir": "/x/sa", "expires": behind + lease,
             "expires_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(behind + lease)),
             "lease": lease}))
    args = bucket_args(sluice, inputs, "s3://skew/run", tmp_path / "sb")
    lock(300)
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 75 and "is in use by another sluice run" in r.stderr, r.stderr[-2000:]
    assert "names host 'node7'" in r.stderr, r.stderr[-2000:]
    lock(2)
    time.sleep(3)
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over the lock of a run that did not renew it" in r.stderr, r.stderr[-2000:]
    assert sorted(remote_ids(client, "skew", "run/")) == sorted(want)


def test_a_run_that_cannot_renew_its_bucket_lock_stops_committing_parts(store, sluice, tmp_path):
    """The store refuses the lock object's renewals (its PUT) while a run
    lasts past most of its lease: another run may take the prefix then, so
    the run commits no part (exit 1, naming the prefix, the cause and 'run
    it again'). It only logged a warning and went on writing parts. Run
    again with the store answering, it ends well with every row once."""
    env, client = store
    client.create_bucket(Bucket="lost")
    inputs, want = image_folder(tmp_path, 1)
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        lenv = dict(env, AWS_ENDPOINT_URL=proxy.url, SLUICE_S3_LOCK_LEASE="2")
        args = bucket_args(sluice, inputs, "s3://lost/run", tmp_path / "state")
        a = start_held(args, lenv, 4000)
        proxy.refuse = lambda m, p, rng: m == "PUT" and p == "/lost/run/_sluice.lock"
        err = a.stderr.read()
        assert a.wait(timeout=120) == 1, err[-2000:]
        assert "lost the lock on s3://lost/run" in err and "AccessDenied" in err, err[-2000:]
        assert "run it again" in err, err[-2000:]
        assert not [k for k in objects(client, "lost", "run/") if "part-" in k]
        proxy.refuse = None
        # a lease of seconds is no margin for a loaded machine's renewals
        r = subprocess.run(args, env=dict(lenv, SLUICE_S3_LOCK_LEASE="60"), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert sorted(remote_ids(client, "lost", "run/")) == sorted(want)
    finally:
        proxy.close()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_part_cut_by_hand_in_the_bucket_is_refused_not_lost(store, sluice, tmp_path, fmt):
    """A part object cut short in the bucket (a tool that rewrote it with
    fewer rows) keeps its name, and the ledger counted its cut rows done:
    a resume went on (exit 0) and those rows were in no object. Now the
    sizes in the run's listing are compared with those the ledger kept at
    each commit: a part that holds fewer rows is refused (exit 2), naming
    the object and the counts; once it is deleted its rows are captioned
    again, each once. A JSONL part edited by hand that keeps its rows
    (another size, as many rows) is taken as it is."""
    import io
    from collections import Counter
    import pyarrow.parquet as pq
    env, client = store
    bucket = f"cut-{fmt}"
    client.create_bucket(Bucket=bucket)
    inputs, want = image_folder(tmp_path, 2)
    ext = {"jsonl": "jsonl", "parquet": "parquet"}[fmt]
    state = tmp_path / "state"
    args = (inputs, "-o", f"s3://{bucket}/run", "--state-dir", state, "--shard-rows", "3",
            "--format", fmt)
    r = caption_env(sluice, env, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    key = f"run/part-00001.{ext}"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if fmt == "jsonl":
        cut = body.splitlines(keepends=True)[0]
        lines = client.get_object(Bucket=bucket, Key="run/part-00000.jsonl")["Body"].read() \
            .decode().splitlines(keepends=True)
        row = dict(json.loads(lines[0]), caption="edited by hand, and longer than it was")
        client.put_object(Bucket=bucket, Key="run/part-00000.jsonl",
                          Body=(json.dumps(row) + "\n" + "".join(lines[1:])).encode())
    else:
        out = io.BytesIO()
        pq.write_table(pq.read_table(io.BytesIO(body)).slice(0, 1), out)
        cut = out.getvalue()
    client.put_object(Bucket=bucket, Key=key, Body=cut)
    for flags in ((), ("--retry-failed",)):
        r = caption_env(sluice, env, *args, *flags)
        assert r.returncode == 2, r.stderr[-2000:]
        assert (f"output part 's3://{bucket}/{key}' holds 1 row, and the resume ledger"
                in r.stderr), r.stderr[-2000:]
        assert "committed 3 in it" in r.stderr and "2 missing rows" in r.stderr, r.stderr
        assert "delete it to have all its rows captioned again" in r.stderr, r.stderr
    assert not [p.name for p in state.iterdir() if p.name.startswith(".")]  # no copy left
    client.delete_object(Bucket=bucket, Key=key)
    r = caption_env(sluice, env, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    # the warning names the object deleted, not a path in the state folder
    assert f"'s3://{bucket}/{key}' is in the resume ledger but gone" in r.stderr, r.stderr
    if fmt == "jsonl":
        assert Counter(remote_ids(client, bucket, "run/")) == Counter(want)
        assert b"edited by hand" in client.get_object(
            Bucket=bucket, Key="run/part-00000.jsonl")["Body"].read()
    else:
        ids = []
        for k in objects(client, bucket, "run/part-"):
            t = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
            ids += t.column("id").to_pylist()
        assert Counter(ids) == Counter(want)


def test_a_resume_on_another_served_model_names_the_bucket(store, sluice, tmp_path):
    """The refusal of a resumed run whose fleet serves another model names
    the output as given (the bucket), not the local state folder, as every
    other resume refusal does."""
    from openai_helpers import FakeServer, completion
    env, client = store
    client.create_bucket(Bucket="served")
    inputs, _ = image_folder(tmp_path, 1)
    state = tmp_path / "state"
    with FakeServer(lambda h, n, body: completion(h), models=("qwen-3b",)) as fake:
        args = (inputs, "-o", "s3://served/run", "--state-dir", state, "--engine", "openai",
                "--endpoint", fake.url, "--shard-rows", "3")
        # The last part's upload fails: work is left for a resumed run.
        r = caption_env(sluice, dict(env, SLUICE_TEST_FAULTS="commit.upload=eio@2"), *args)
        assert r.returncode != 0, r.stderr[-2000:]
        fake.models = ("qwen-7b",)
        r = caption_env(sluice, env, *args)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "output folder 's3://served/run' holds rows answered by model 'qwen-3b'" \
            in r.stderr, r.stderr[-2000:]
        assert str(state) not in r.stderr


def test_retry_failed_rows_of_an_output_in_a_bucket(store, sluice, tmp_path):
    """--retry-failed on an s3:// output: the parts holding failed rows are
    downloaded, filtered and uploaded over themselves, errors objects
    deleted; a crash after the upload is finished by the next run. Every
    input once, answered, and nothing left in the state folder."""
    from collections import Counter
    env, client = store
    client.create_bucket(Bucket="retry")
    good = sorted(SAMPLES.glob("*.jpg"))
    d = tmp_path / "in"
    d.mkdir()
    names = []
    for i, p in enumerate(good):
        (d / f"g{i}.jpg").symlink_to(p)
        names += [f"g{i}.jpg", f"m{i}.jpg"] if i % 2 else [f"g{i}.jpg"]
    (d / "m.jsonl").write_text("".join(json.dumps({"image": n}) + "\n" for n in names))
    state = tmp_path / "state"
    errors = tmp_path / "errors.jsonl"
    args = (d / "m.jsonl", "-o", "s3://retry/run/", "--state-dir", state, "--shard-rows", "3",
            "--ordered", "--errors-file", errors)
    r = caption_env(sluice, env, *args)
    assert r.returncode == 3, r.stderr[-2000:]
    missing = [n for n in names if n.startswith("m")]
    assert len(errors.read_text().splitlines()) == len(missing)
    errs_before = [k for k in objects(client, "retry", "run/errors-")
                   if client.get_object(Bucket="retry", Key=k)["ContentLength"]]
    assert errs_before
    for n in missing:
        shutil.copy(SAMPLES / "coffee.jpg", d / n)
    # The first part's upload lands, then the run fails before the ledger
    # forgets its ids: the next run (without the flag) finishes it.
    r = caption_env(sluice, dict(env, SLUICE_TEST_FAULTS="retry.after_rename=eio@1"), *args,
                    "--retry-failed")
    assert r.returncode == 1, r.stderr[-2000:]
    r = caption_env(sluice, env, *args)
    assert r.returncode == 3, r.stderr[-2000:]  # the other parts' rows are still failed
    r = caption_env(sluice, env, *args, "--retry-failed")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"retrying: {len(missing) - 1} failed rows" in r.stderr, r.stderr[-2000:]
    ids = Counter(remote_ids(client, "retry", "run/"))
    assert sorted(ids) == sorted(f"m.jsonl:{k + 1}" for k in range(len(names)))
    assert set(ids.values()) == {1}
    assert errors.read_text() == ""  # none fails now
    for k in errs_before:  # deleted, or empty for a part that never failed
        assert k not in objects(client, "retry", "run/errors-") or \
            not client.get_object(Bucket="retry", Key=k)["ContentLength"]
    assert not [p.name for p in state.iterdir() if p.name.startswith(".")]


def test_retry_failed_rows_of_a_parquet_output_in_a_bucket(store, sluice, tmp_path):
    """--retry-failed on an s3:// Parquet output: the part is downloaded
    into a copy whose name ended '.tmp-get-PID', so it was read as JSONL
    (a part's format is known by its name) and the retry failed on its
    bytes. Now the copy ends as the part does: the failed row is answered
    and every input is in the bucket once."""
    import io
    import pyarrow.parquet as pq
    env, client = store
    client.create_bucket(Bucket="retry-pq")
    d = tmp_path / "in"
    d.mkdir()
    names = []
    for i, p in enumerate(sorted(SAMPLES.glob("*.jpg"))[:3]):
        (d / f"g{i}.jpg").symlink_to(p)
        names += [f"g{i}.jpg"]
    names.append("m0.jpg")  # missing until the retry
    (d / "m.jsonl").write_text("".join(json.dumps({"id": n, "image": n}) + "\n" for n in names))
    args = (d / "m.jsonl", "-o", "s3://retry-pq/run", "--state-dir", tmp_path / "state",
            "--format", "parquet")
    r = caption_env(sluice, env, *args)
    assert r.returncode == 3, r.stderr[-2000:]
    shutil.copy(SAMPLES / "coffee.jpg", d / "m0.jpg")
    r = caption_env(sluice, env, *args, "--retry-failed")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = []
    for k in objects(client, "retry-pq", "run/part-"):
        t = pq.read_table(io.BytesIO(client.get_object(Bucket="retry-pq", Key=k)["Body"].read()))
        rows += t.to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(names)
    assert all(row["error"] is None for row in rows), rows


def test_a_kill_between_upload_and_commit_loses_and_repeats_nothing(store, sluice, tmp_path):
    from collections import Counter
    env, client = store
    client.create_bucket(Bucket="kills")
    inputs, want = image_folder(tmp_path, 2)
    state = tmp_path / "state"
    args = [str(sluice.binary), "caption", str(inputs), "-o", "s3://kills/r", "--state-dir",
            str(state), "--shard-rows", "2", "--model", str(REPO / "models/tiny/model.gguf"),
            "--mmproj", str(REPO / "models/tiny/mmproj.gguf"), "--max-tokens", "4",
            "--metrics-addr", "off"]
    faults = "trace,commit.after_upload=sleep:20000@2"
    proc = subprocess.Popen(args, env=dict(env, SLUICE_TEST_FAULTS=faults),
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    for line in proc.stderr:
        seen += line
        if "commit.after_upload" in line and "part-00001" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # The second part's object is there, its ledger entry only pending.
    assert "r/part-00001.jsonl" in objects(client, "kills", "r/")
    r = caption_env(sluice, env, inputs, "-o", "s3://kills/r", "--state-dir", state,
                    "--shard-rows", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert Counter(remote_ids(client, "kills", "r/")) == Counter(want)

    # Another state folder does not know those parts: refused, not mixed in.
    r = caption_env(sluice, env, inputs, "-o", "s3://kills/r", "--state-dir", tmp_path / "other")
    assert r.returncode == 2 and "--state-dir" in r.stderr
    # --overwrite starts over: the old parts go.
    r = caption_env(sluice, env, inputs, "-o", "s3://kills/r", "--state-dir", tmp_path / "other",
                    "--overwrite", "--shard-rows", "100")
    assert r.returncode == 0, r.stderr[-2000:]
    assert [k for k in objects(client, "kills", "r/part-")] == ["r/part-00000.jsonl"]
    assert Counter(remote_ids(client, "kills", "r/")) == Counter(want)


# ---- ranged reads: Parquet files and tar shards in a bucket, no local copy -----------


def run_watching_tmp(sluice, env, tmp_path, *args):
    """A caption run with TMPDIR an empty folder, watched all along: what
    ever appears in it (a local copy of an input) is returned."""
    import threading
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    seen = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(os.listdir(tmp))
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        r = caption_env(sluice, dict(env, TMPDIR=str(tmp)), *args, "--progress-every", "0.05")
    finally:
        done.set()
        t.join()
    seen.update(os.listdir(tmp))
    return r, seen


def final_progress(stderr):
    return [line for line in stderr.splitlines() if line.startswith("progress:")][-1]


def test_a_folder_in_a_bucket_is_listed_by_the_run_and_by_the_count(store, sluice, tmp_path):
    """An s3:// folder across pages (1,200 keys that are not images fill
    the first): the run lists each page of ListObjectsV2 once and the count
    lists its own (sharing the run's would keep the keys listed ahead in
    memory), and the total is still the images under the prefix."""
    env, client = store
    client.create_bucket(Bucket="once")
    images = sample_images()[:3]
    keys = [f"set/n/{i:05d}.txt" for i in range(1200)]
    for k in keys:
        client.put_object(Bucket="once", Key=k, Body=b"x")
    for p in images:  # after the .txt keys: on the second page
        keys.append(f"set/z/{p.name}")
        client.put_object(Bucket="once", Key=keys[-1], Body=p.read_bytes())
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        r = caption_env(sluice, dict(env, AWS_ENDPOINT_URL=proxy.url), "s3://once/set",
                        "-o", tmp_path / "o")
        assert r.returncode == 0, r.stderr[-3000:]
        assert sorted(row["id"] for row in read_rows(tmp_path / "o")) == \
            sorted(f"z/{p.name}" for p in images)
        assert f"{len(images)} of {len(images)} (100%)" in final_progress(r.stderr)
        lists = [e for e in proxy.log if e[0] == "GET" and e[1].rstrip("/") == "/once"]
        # 2 pages, the run's and the count's, after two of one key at most
        # that tell the name 'set' (no object) is the folder set/.
        pages = [e for e in lists if e[4] > 4000]
        assert len(pages) == 2 * -(-len(keys) // 1000), lists
        assert len(lists) == len(pages) + 2 and lists[:2] == [e for e in lists if e not in pages]
    finally:
        proxy.close()


def test_parquet_in_a_bucket_is_read_by_ranges(store, sluice, tmp_path):
    """A Parquet file of three row groups in a bucket: read by ranged GETs
    only (the footer by one from the end), no copy in TMPDIR, a 503 on a
    ranged read retried, and the progress total from the footer (ranged
    too) right."""
    import io
    import pyarrow as pa
    import pyarrow.parquet as pq
    env, client = store
    client.create_bucket(Bucket="ranged")
    images = sample_images()[:3] * 2
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "label": pa.array(range(6), pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    assert pq.ParquetFile(io.BytesIO(buf.getvalue())).num_row_groups == 3
    size = len(buf.getvalue())
    client.put_object(Bucket="ranged", Key="pq/train.parquet", Body=buf.getvalue())
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        # The first read of a row group's bytes (not the footer's, from the end) is throttled.
        proxy.throttle = lambda m, p, rng: (m == "GET" and p == "/ranged/pq/train.parquet"
                                            and rng is not None and not rng.startswith("bytes=-")
                                            and not rng.startswith("bytes=0-3"))
        r, seen = run_watching_tmp(sluice, dict(env, AWS_ENDPOINT_URL=proxy.url), tmp_path,
                                   "s3://ranged/pq/train.parquet", "-o", tmp_path / "o")
        assert r.returncode == 0, r.stderr[-3000:]
        assert not seen, seen  # no local copy, ever
        rows = read_rows(tmp_path / "o")
        assert sorted(row["label"] for row in rows) == list(range(6))
        assert all(row["error"] is None for row in rows)
        assert "6 of 6 (100%)" in final_progress(r.stderr)
        assert len(proxy.throttled) == 1  # ... and retried: every row is there
        gets = proxy.gets("/ranged/pq/train.parquet")
        assert gets and all(rng is not None for _, _, rng, _, _ in gets), gets
        assert any(rng.startswith("bytes=-") for _, _, rng, _, _ in gets)  # the footer
        # Open (tail, head) twice (the run and the count) and one GET per row group.
        assert len(gets) <= 2 * 2 + 3, gets
        assert sum(n for *_, n in gets) < 2 * size
    finally:
        proxy.close()


def test_arrow_files_in_a_bucket_are_read_by_ranges(store, sluice, tmp_path):
    """A Feather file (lz4-compressed batches) and a dataset's stream-format
    shard in a bucket: read by ranged GETs, no copy in TMPDIR, each batch's
    header and body in a request or two, every row and column there; a
    missing object fails one row naming it."""
    import io
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.ipc as ipc
    env, client = store
    client.create_bucket(Bucket="arrows")
    from PIL import Image
    images = sample_images()[:3] * 4
    sizes = [Image.open(p).size for p in images]
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "label": pa.array(range(12), pa.int64())})
    feather_buf, stream_buf = io.BytesIO(), io.BytesIO()
    feather.write_feather(table, feather_buf, chunksize=3)
    with ipc.new_stream(stream_buf, table.schema) as w:
        w.write_table(table, max_chunksize=4)
    client.put_object(Bucket="arrows", Key="ds/a.feather", Body=feather_buf.getvalue())
    client.put_object(Bucket="arrows", Key="ds/data-00000-of-00001.arrow", Body=stream_buf.getvalue())
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        r, seen = run_watching_tmp(sluice, dict(env, AWS_ENDPOINT_URL=proxy.url), tmp_path,
                                   "s3://arrows/ds/a.feather", "s3://arrows/ds/data-00000-of-00001.arrow",
                                   "-o", tmp_path / "o")
        assert r.returncode == 0, r.stderr[-3000:]
        assert not seen, seen
        rows = read_rows(tmp_path / "o")
        for name in ("a.feather", "data-00000-of-00001.arrow"):
            mine = {row["id"]: row for row in rows if row["id"].startswith(name + ":")}
            assert sorted(mine) == sorted(f"{name}:{i}" for i in range(12)), sorted(mine)
            assert all(row["error"] is None for row in mine.values()), mine
            assert [mine[f"{name}:{i}"]["label"] for i in range(12)] == list(range(12))
            assert [(mine[f"{name}:{i}"]["source_width"], mine[f"{name}:{i}"]["source_height"])
                    for i in range(12)] == sizes
            assert all(row["caption"] for row in mine.values())
        for key, size, batches in (("a.feather", len(feather_buf.getvalue()), 4),
                                   ("data-00000-of-00001.arrow", len(stream_buf.getvalue()), 3)):
            gets = proxy.gets(f"/arrows/ds/{key}")
            assert gets and all(rng is not None for _, _, rng, _, _ in gets), gets
            # The run: the size query, then per batch at most a header block
            # and its body; the count: the size query and a 16 KiB block a batch.
            assert len(gets) <= (1 + 2 * batches + 2) + (1 + batches + 1), gets
            assert sum(n for *_, n in gets) < 2 * size
        assert "24 of 24 (100%)" in final_progress(r.stderr), r.stderr[-2000:]
    finally:
        proxy.close()
    r = caption_env(sluice, env, "s3://arrows/ds/none.arrow", "-o", tmp_path / "m", "--dry-run")
    assert r.returncode == 3, r.stderr[-3000:]
    rows = read_rows(tmp_path / "m")
    assert len(rows) == 1 and "s3://arrows/ds/none.arrow" in rows[0]["error"], rows


def test_tar_shards_in_a_bucket_are_streamed(store, sluice, tmp_path):
    """Tar shards in a bucket are read by ranged GETs in turn, never copied:
    samples right, the progress total from the headers right, and a large
    member nothing uses (a sample's .npy) jumped over, not fetched, by the
    run and by the count alike."""
    env, client = store
    client.create_bucket(Bucket="shards")
    images = sample_images()[:4]
    small = wds_shard([m for k, p in enumerate(images)
                       for m in ((f"s{k}.jpg", p.read_bytes()), (f"s{k}.txt", f"alt {k}".encode()))])
    client.put_object(Bucket="shards", Key="wds/a-000.tar", Body=small)
    big_member = os.urandom(3 << 20)
    big = wds_shard([m for k, p in enumerate(images[:3])
                     for m in ((f"b{k}.jpg", p.read_bytes()), (f"b{k}.json", b'{"n": %d}' % k),
                               (f"b{k}.npy", big_member))])
    client.put_object(Bucket="shards", Key="wds/a-001.tar", Body=big)
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    assert len(small) > 2 * 65536
    # The shard's second block (after the first 64 KiB) is throttled once.
    proxy.throttle = lambda m, p, rng: (m == "GET" and p == "/shards/wds/a-000.tar"
                                        and (rng or "").startswith("bytes=65536-"))
    try:
        r, seen = run_watching_tmp(sluice, dict(env, AWS_ENDPOINT_URL=proxy.url), tmp_path,
                                   "s3://shards/wds/a-{000..001}.tar", "-o", tmp_path / "o")
        assert r.returncode == 0, r.stderr[-3000:]
        assert not seen, seen
        rows = {row["id"]: row for row in read_rows(tmp_path / "o")}
        assert set(rows) == ({f"a-000.tar/s{k}" for k in range(4)} |
                             {f"a-001.tar/b{k}" for k in range(3)})
        assert all(row["error"] is None for row in rows.values())
        assert rows["a-000.tar/s2"]["txt"] == "alt 2" and rows["a-001.tar/b1"]["n"] == 1
        assert "7 of 7 (100%)" in final_progress(r.stderr)
        assert len(proxy.throttled) == 1  # and retried: every sample is there
        for key, body in (("wds/a-000.tar", small), ("wds/a-001.tar", big)):
            gets = proxy.gets(f"/shards/{key}")
            assert gets and all(rng is not None for _, _, rng, _, _ in gets), gets
        # The run and the count each read the big shard; the 9 MiB of .npy
        # members are jumped over: far less than the shard comes back.
        fetched = sum(n for *_, n in proxy.gets("/shards/wds/a-001.tar"))
        assert fetched < len(big) / 2, (fetched, len(big))
    finally:
        proxy.close()



def test_a_manifest_in_a_bucket_is_streamed_by_ranges(store, sluice, tmp_path):
    """A 2.6 MB JSONL manifest and a CSV manifest in a bucket are read in
    place by ranged GETs of at most 1 MiB, never copied (nothing appears in
    TMPDIR), relative image paths resolved in the manifest's folder; a GET
    throttled mid-manifest is retried, only that chunk asked for again. A
    line cut across two chunks is whole. The progress total is right."""
    import csv
    import io
    env, client = store
    client.create_bucket(Bucket="lists")
    images = sample_images()[:4]
    for p in images:
        client.put_object(Bucket="lists", Key=f"m/img/{p.name}", Body=p.read_bytes())
    pad = "x" * 20_000  # long lines: the manifest spans three 1 MiB chunks
    lines = [json.dumps({"id": f"r{i:03d}", "image": f"img/{images[i % 4].name}", "n": i,
                         "note": pad}) for i in range(130)]
    manifest = ("\n".join(lines) + "\n").encode()
    assert len(manifest) > 2 * (1 << 20)
    client.put_object(Bucket="lists", Key="m/list.jsonl", Body=manifest)
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["path", "label"])
    for i, p in enumerate(images):
        w.writerow([f"img/{p.name}", f"label, {i}"])
    client.put_object(Bucket="lists", Key="m/list.csv", Body=table.getvalue().encode())
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    proxy.throttle = lambda m, p, rng: (m == "GET" and p == "/lists/m/list.jsonl"
                                        and (rng or "").startswith(f"bytes={1 << 20}-"))
    try:
        penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
        r, seen = run_watching_tmp(sluice, penv, tmp_path, "s3://lists/m/list.jsonl",
                                   "-o", tmp_path / "j")
        assert r.returncode == 0, r.stderr[-3000:]
        assert not seen, seen
        rows = {row["id"]: row for row in read_rows(tmp_path / "j")}
        assert sorted(rows) == [f"r{i:03d}" for i in range(130)]
        assert all(row["error"] is None and row["note"] == pad for row in rows.values())
        assert rows["r077"]["n"] == 77
        assert rows["r077"]["path"] == f"s3://lists/m/img/{images[77 % 4].name}"
        assert "130 of 130 (100%)" in final_progress(r.stderr)
        assert len(proxy.throttled) == 1  # and retried
        gets = proxy.gets("/lists/m/list.jsonl")
        for _, _, rng, _, _ in gets:
            first, last = map(int, rng.split("=")[1].split("-"))
            assert last - first + 1 <= 1 << 20, rng
        # the run and the count pass each read it once: 3 chunks and the GET at its end
        assert len(gets) <= 8, gets
        r, seen = run_watching_tmp(sluice, penv, tmp_path, "s3://lists/m/list.csv",
                                   "-o", tmp_path / "c")
        assert r.returncode == 0, r.stderr[-3000:]
        assert not seen, seen
        rows = read_rows(tmp_path / "c")
        assert sorted(row["label"] for row in rows) == [f"label, {i}" for i in range(4)]
        assert all(row["error"] is None for row in rows)
        assert all(rng for _, _, rng, _, _ in proxy.gets("/lists/m/list.csv"))
        # A chunk the store refuses for good: the lines before it are read,
        # then one failed row (the manifest's id) says where and why.
        proxy.refuse = lambda m, p, rng: (m == "GET" and p == "/lists/m/list.jsonl"
                                          and (rng or "").startswith(f"bytes={1 << 20}-"))
        r = caption_env(sluice, penv, "s3://lists/m/list.jsonl", "-o", tmp_path / "x")
        assert r.returncode == 3, r.stderr[-3000:]
        rows = {row["id"]: row for row in read_rows(tmp_path / "x")}
        whole = (1 << 20) // len(lines[0].encode() + b"\n")  # lines within the first chunk
        assert sorted(k for k in rows if rows[k]["error"] is None) == \
            [f"r{i:03d}" for i in range(whole)]
        err = rows["list.jsonl"]["error"]
        assert f"reading stopped after line {whole}" in err and "AccessDenied" in err, err
        assert "s3://lists/m/list.jsonl" in err and len(rows) == whole + 1
        # Shared out by item (--input-shard, MPI), a run that went on
        # would count the lines after the cut where the other runs do
        # not: it ends instead (it exited 0, the failed row in another run's share).
        r = caption_env(sluice, penv, "s3://lists/m/list.jsonl", "-o", tmp_path / "y",
                        "--input-shard", "0/2", "--input-shard-size", "50")
        assert r.returncode == 1, r.stderr[-3000:]
        assert "input 's3://lists/m/list.jsonl': manifest" in r.stderr
        assert "AccessDenied" in r.stderr and "run it again" in r.stderr, r.stderr[-3000:]
    finally:
        proxy.close()


def test_a_manifest_replaced_while_it_is_read_is_not_mixed(store, sluice, tmp_path):
    """A manifest read by ranged GETs is replaced in the bucket between its
    first and second chunk (another job rewrote it). The reader went on
    with the new object's bytes from offset 1 MiB: lines of two versions
    put together in one run (the new version's ids among the old ones').
    Now every later GET asks for the first answer's ETag (If-Match): the
    store refuses it (412), and the lines read before stay, then one failed
    row names the object and says it changed."""
    env, client = store
    client.create_bucket(Bucket="swaps")
    images = sample_images()[:4]
    for p in images:
        client.put_object(Bucket="swaps", Key=f"m/img/{p.name}", Body=p.read_bytes())

    def manifest(tag, pad):
        lines = [json.dumps({"id": f"{tag}{i:03d}", "image": f"img/{images[i % 4].name}",
                             "note": pad}) for i in range(130)]
        return ("\n".join(lines) + "\n").encode(), len(lines[0]) + 1
    old, line_len = manifest("old", "x" * 20_000)
    new, _ = manifest("new", "y" * 19_000)  # other line ends: a mix would show
    assert len(old) > 2 * (1 << 20)
    client.put_object(Bucket="swaps", Key="m/list.jsonl", Body=old)
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    firsts, swapped = [], []

    # The run and its count pass each read the manifest: it is replaced
    # once both have read the first chunk, at the first GET of the second.
    def swap(m, p, rng):
        if m != "GET" or p != "/swaps/m/list.jsonl" or not rng:
            return False
        if rng.startswith("bytes=0-"):
            firsts.append(rng)
        elif rng.startswith(f"bytes={1 << 20}-") and len(firsts) >= 2 and not swapped:
            client.put_object(Bucket="swaps", Key="m/list.jsonl", Body=new)
            swapped.append(rng)
        return False
    proxy.refuse = swap
    try:
        penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
        r = caption_env(sluice, penv, "s3://swaps/m/list.jsonl", "-o", tmp_path / "x")
        assert swapped, proxy.log
        assert r.returncode == 3, r.stderr[-3000:]
        rows = {row["id"]: row for row in read_rows(tmp_path / "x")}
        assert not [k for k in rows if k.startswith("new")], sorted(rows)
        whole = (1 << 20) // line_len
        assert sorted(k for k in rows if rows[k]["error"] is None) == \
            [f"old{i:03d}" for i in range(whole)]
        err = rows["list.jsonl"]["error"]
        assert "s3://swaps/m/list.jsonl" in err and "changed since its first read" in err, err
        assert len(rows) == whole + 1
    finally:
        proxy.close()


def test_empty_objects_read_as_empty_files_do(store, sluice, tmp_path):
    """An empty object read by ranges: the store refuses a range of it
    (416) and moto's answer gives no size, so an empty manifest failed as
    a row ("the answer to a range has no Content-Range size", exit 3) where
    an empty local one is no rows (exit 0), and an empty tar shard did not
    say it was empty. A range from byte 0 or from the end that cannot be
    satisfied now means an empty object."""
    env, client = store
    client.create_bucket(Bucket="empties")
    for key in ("e/list.jsonl", "e/shard.tar"):
        client.put_object(Bucket="empties", Key=key, Body=b"")
    r = caption_env(sluice, env, "s3://empties/e/list.jsonl", "-o", tmp_path / "m")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_rows(tmp_path / "m") == []
    r = caption_env(sluice, env, "s3://empties/e/shard.tar", "-o", tmp_path / "t")
    assert r.returncode == 3, r.stderr[-2000:]
    [row] = read_rows(tmp_path / "t")
    assert row["error"] == ("cannot open shard 's3://empties/e/shard.tar': empty file (0 bytes), "
                            "not a tar archive"), row


def test_a_batch_file_in_a_bucket(store, sluice, tmp_path):
    """`sluice batch s3://...` reads the requests file in place (before, it
    could not open it: only caption manifests were copied down); the count
    pass counts its lines by ranged reads too."""
    env, client = store
    client.create_bucket(Bucket="batches")
    lines = [json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"messages": [{"role": "user", "content": f"Say {i}."}]}})
             for i in range(12)]
    client.put_object(Bucket="batches", Key="in/requests.jsonl",
                      Body="\n".join(lines[:6] + [""] + lines[6:]) + "\n")
    out = tmp_path / "out"
    r = subprocess.run([str(sluice.binary), "batch", "s3://batches/in/requests.jsonl", "-o",
                        str(out), "--model", str(REPO / "models/tiny/model.gguf"),
                        "--max-tokens", "4", "--metrics-addr", "off", "--progress-every",
                        "0.05"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = sorted(json.loads(t)["custom_id"] for p in out.glob("part-*.jsonl")
                 for t in p.read_text().splitlines())
    assert ids == sorted(f"q{i}" for i in range(12))
    assert "12 of 12 (100%)" in final_progress(r.stderr)
    missing = subprocess.run([str(sluice.binary), "batch", "s3://batches/in/none.jsonl", "-o",
                              str(tmp_path / "none"), "--model",
                              str(REPO / "models/tiny/model.gguf"), "--metrics-addr", "off"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 3, missing.stderr[-3000:]
    row = json.loads(next((tmp_path / "none").glob("part-*.jsonl")).read_text())
    assert "s3://batches/in/none.jsonl" in row["error"]["message"]
    assert "NoSuchKey" in row["error"]["message"]


def test_a_run_killed_mid_upload_leaves_no_upload_behind(store, sluice, tmp_path):
    """A part over 16 MiB goes up in parts; the run is killed (SIGKILL)
    between two of them, which leaves an unfinished multipart upload in the
    store (billed until aborted). The next run of the output aborts it,
    says so, and writes everything once; uploads that are not this output's
    parts are left alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from collections import Counter
    env, client = store
    client.create_bucket(Bucket="stale")
    images = sample_images()[:3]
    blob = "".join(chr(97 + (i * 7919) % 26) for i in range(1 << 16)) * 100  # 6.5 MB a row
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "id": pa.array([f"r{i}" for i in range(3)]),
                      "blob": pa.array([blob] * 3)})
    src = tmp_path / "big.parquet"
    pq.write_table(table, src)
    other = client.create_multipart_upload(Bucket="stale", Key="r/notes.bin")["UploadId"]
    elsewhere = client.create_multipart_upload(Bucket="stale", Key="r2/part-00000.jsonl")["UploadId"]
    state = tmp_path / "state"
    args = [str(sluice.binary), "caption", str(src), "-o", "s3://stale/r", "--state-dir",
            str(state), "--model", str(REPO / "models/tiny/model.gguf"),
            "--mmproj", str(REPO / "models/tiny/mmproj.gguf"), "--max-tokens", "4",
            "--metrics-addr", "off"]
    proc = subprocess.Popen(args, env=dict(env, SLUICE_TEST_FAULTS="trace,s3.upload_part=sleep:60000"),
                            stderr=subprocess.PIPE, text=True)
    seen = ""
    for line in proc.stderr:
        seen += line
        if "fault point s3.upload_part" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert "fault point s3.upload_part" in seen, seen[-3000:]

    def uploads():
        return sorted((u["Key"], u["UploadId"])
                      for u in client.list_multipart_uploads(Bucket="stale").get("Uploads", []))

    left = [k for k, _ in uploads()]
    assert left.count("r/part-00000.jsonl") == 1, left  # the killed run's part, unfinished
    assert not objects(client, "stale", "r/part-")
    r = caption_env(sluice, env, src, "-o", "s3://stale/r", "--state-dir", state)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "aborted 1 unfinished multipart upload" in r.stderr, r.stderr[-3000:]
    assert uploads() == sorted([("r/notes.bin", other), ("r2/part-00000.jsonl", elsewhere)])
    assert Counter(remote_ids(client, "stale", "r/")) == Counter(f"big.parquet:{i}" for i in range(3))


# ---- connections kept: one per thread, not one per request ---------------------------


def counts(stdout):
    words = stdout.split()
    return int(words[words.index("requests") + 1]), int(words[words.index("connections") + 1])


def test_requests_reuse_their_connections(store, tmp_path):
    """GETs of a small object, one thread then four at once, through a
    keep-alive proxy (moto itself closes every connection) that counts the
    connections it accepts: each thread opens one and keeps it, and the
    process's own count (CURLINFO_NUM_CONNECTS) agrees with the server's.
    A 3-part multipart upload (5 requests) goes over one connection too.
    Before connections were kept: one connection per request."""
    env, client = store
    client.create_bucket(Bucket="conn")
    client.put_object(Bucket="conn", Key="small.bin", Body=os.urandom(4096))
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
    try:
        r = tool(penv, "repeat", "s3://conn/small.bin", 60, 1)
        assert r.returncode == 0, r.stderr
        assert counts(r.stdout) == (60, proxy.connections) and proxy.requests == 60
        assert proxy.connections == 1
        proxy.connections = proxy.requests = 0
        r = tool(penv, "repeat", "s3://conn/small.bin", 80, 4)
        assert r.returncode == 0, r.stderr
        assert counts(r.stdout) == (80, proxy.connections) and proxy.requests == 80
        assert proxy.connections <= 4
        proxy.connections = proxy.requests = 0
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(11 << 20))
        assert tool(penv, "upload", big, "s3://conn/big.bin", 5 << 20).returncode == 0
        assert proxy.requests == 5 and proxy.connections == 1
        assert client.head_object(Bucket="conn", Key="big.bin")["ContentLength"] == 11 << 20
    finally:
        proxy.close()


def test_a_job_over_many_small_objects_keeps_its_connections(store, sluice, tmp_path):
    """A caption job reading 40 images from a bucket and writing its parts
    to another prefix: the store sees a handful of connections (one per
    thread that makes requests) for all of its requests."""
    env, client = store
    client.create_bucket(Bucket="many-small")
    images = sample_images()
    for i in range(40):
        p = images[i % len(images)]
        client.put_object(Bucket="many-small", Key=f"in/{i:03d}{p.suffix}", Body=p.read_bytes())
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        r = caption_env(sluice, dict(env, AWS_ENDPOINT_URL=proxy.url), "s3://many-small/in",
                        "-o", "s3://many-small/out", "--state-dir", tmp_path / "state",
                        "--shard-rows", "10")
        assert r.returncode == 0, r.stderr[-3000:]
        assert len(remote_ids(client, "many-small", "out/")) == 40
        # 40 GETs, listings (run and count pass), 4 part PUTs, the summary's ...
        assert proxy.requests >= 46
        # ... over a connection per thread that asked: read stages, the
        # writer, the count pass, the main thread. Before: one each.
        assert proxy.connections <= 12, (proxy.connections, proxy.requests)
    finally:
        proxy.close()


def test_overwrite_removes_the_errors_objects_too(store, sluice, tmp_path):
    """--overwrite on an s3:// output with --errors-file deletes the old
    run's errors objects with its parts, as it removes a local folder's
    errors files: the new run writes errors objects only for its own part
    numbers, so the old run's failures (here in its last part) stayed."""
    env, client = store
    client.create_bucket(Bucket="owr")
    inputs, want = image_folder(tmp_path, 1)
    (inputs / "zz-broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    state = tmp_path / "state"
    args = [inputs, "-o", "s3://owr/r", "--state-dir", state, "--ordered",
            "--errors-file", tmp_path / "errors.jsonl"]
    r = caption_env(sluice, env, *args, "--shard-rows", "2")
    assert r.returncode == 3, r.stderr[-2000:]
    last = objects(client, "owr", "r/errors-")[-1]
    assert b"zz-broken.jpg" in client.get_object(Bucket="owr", Key=last)["Body"].read()
    (inputs / "zz-broken.jpg").unlink()
    r = caption_env(sluice, env, *args, "--shard-rows", "100", "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    assert objects(client, "owr", "r/part-") == ["r/part-00000.jsonl"]
    assert objects(client, "owr", "r/errors-") == ["r/errors-00000.jsonl"]
    assert not client.get_object(Bucket="owr", Key="r/errors-00000.jsonl")["ContentLength"]
    assert sorted(remote_ids(client, "owr", "r/")) == want


def test_a_folder_that_cannot_be_listed_is_a_row_naming_it(store, sluice, tmp_path):
    """A bucket folder whose listing fails (here: no such bucket) is one
    failed row whose id and path name the folder; alone it had the id ""
    and no path (the message said "sluice:  failed"), an id every such
    folder would share."""
    env, _ = store
    out = tmp_path / "out"
    r = caption_env(sluice, env, "s3://no-such-bucket/set", "-o", out)
    assert r.returncode == 3, r.stderr[-2000:]
    [row] = read_rows(out)
    assert (row["id"], row["path"]) == ("set/", "s3://no-such-bucket/set/")
    assert "NoSuchBucket" in row["error"] and "s3://no-such-bucket/set/" in row["error"]
    assert "sluice: set/ failed (read)" in r.stderr


def test_keys_with_dot_segments_are_names_not_paths(store, sluice, tmp_path):
    """'in/./a.jpg' and 'in/sub/../b.jpg' are objects of their own, listed
    under in/ and read as named; an output prefix 'o/../up' is written under
    that key. curl squashed the dot segments: the first failed (NoSuchKey),
    the second read the object 'in/b.jpg' (another image) with no error, and
    the parts went to 'up/'. A manifest's relative paths resolve as paths
    ('../in/b.jpg' from man/ is in/b.jpg), by sluice now, not by curl."""
    from PIL import Image
    env, client = store
    client.create_bucket(Bucket="dots")
    sizes = {}
    for p in sample_images():
        with Image.open(p) as im:
            sizes.setdefault(im.size, p)
    (w0, p0), (w1, p1), (w2, p2) = list(sizes.items())[:3]
    client.put_object(Bucket="dots", Key="in/./a.jpg", Body=p0.read_bytes())
    client.put_object(Bucket="dots", Key="in/sub/../b.jpg", Body=p1.read_bytes())
    client.put_object(Bucket="dots", Key="in/b.jpg", Body=p2.read_bytes())
    r = caption_env(sluice, env, "s3://dots/in/", "-o", "s3://dots/o/../up",
                    "--state-dir", tmp_path / "state")
    assert r.returncode == 0, r.stderr[-3000:]
    keys = objects(client, "dots", "")
    assert "o/../up/part-00000.jsonl" in keys and not [k for k in keys if k.startswith("up/")], keys
    body = client.get_object(Bucket="dots", Key="o/../up/part-00000.jsonl")["Body"].read()
    rows = {row["id"]: row for row in map(json.loads, body.decode().splitlines())}
    assert {k: (row["source_width"], row["source_height"]) for k, row in rows.items()} == \
        {"./a.jpg": w0, "sub/../b.jpg": w1, "b.jpg": w2}, rows
    # A manifest's relative paths still resolve as paths in its folder.
    client.put_object(Bucket="dots", Key="man/list.jsonl", Body="\n".join(
        json.dumps({"id": k, "image": v}) for k, v in
        (("up", "../in/b.jpg"), ("round", "./x/../../in/b.jpg"), ("past", "../../../in/b.jpg"))))
    r = caption_env(sluice, env, "s3://dots/man/list.jsonl", "-o", tmp_path / "m")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "m")
    assert {row["id"]: (row["path"], (row["source_width"], row["source_height"]))
            for row in rows} == {k: ("s3://dots/in/b.jpg", w2) for k in ("up", "round", "past")}


def test_the_default_state_folder_stays_below_its_root(store, sluice, tmp_path):
    """An output prefix 'o/../up' is a key of its own (above), but its
    default state folder was the path $XDG_STATE_HOME/sluice/s3/dots/o/../up,
    which is .../dots/up: outside the folder the key names, shared with the
    prefix 'up' (sec18's finding). The dot segment is spelled %2E%2E."""
    env, client = store
    client.create_bucket(Bucket="dots2")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(sample_images()[0].read_bytes())
    xdg = tmp_path / "xdg"
    r = caption_env(sluice, dict(env, XDG_STATE_HOME=str(xdg)), tmp_path / "in", "-o",
                    "s3://dots2/o/../up", "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    root = xdg / "sluice" / "s3" / "dots2"
    assert (root / "o" / "%2E%2E" / "up" / "_sluice_ledger.sqlite").exists(), \
        sorted(str(p.relative_to(xdg)) for p in xdg.rglob("*"))
    assert not (root / "up").exists()


def test_a_bucket_named_dots_keeps_its_state_folder_below_the_root(store, sluice, tmp_path):
    """sl_s3_split takes '.' and '..' as bucket names (only its letters are
    checked), and the key's dot segments were spelled %2E but the bucket's
    were not: s3://../x had the default state folder $XDG_STATE_HOME/sluice/x,
    made before the store said there is no such bucket. Whatever the store
    answers, nothing is made outside sluice/s3/."""
    env, _ = store
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(sample_images()[0].read_bytes())
    xdg = tmp_path / "xdg"
    for bucket in ("..", "."):
        caption_env(sluice, dict(env, XDG_STATE_HOME=str(xdg)), tmp_path / "in", "-o",
                    f"s3://{bucket}/escaped", "--dry-run")
    made = sorted(str(p.relative_to(xdg)) for p in xdg.rglob("*"))
    assert not (xdg / "sluice" / "escaped").exists(), made
    assert not (xdg / "sluice" / "s3" / "escaped").exists(), made

def test_two_outputs_that_come_to_one_state_folder_do_not_share_its_ledger(store, sluice,
                                                                            tmp_path):
    """'x/./y' and 'x/%2E/y' are two prefixes of the store, but their
    default state folders are one (the dot segment is spelled %2E), as are
    any two outputs given one --state-dir: the second run took the first's
    ledger for its own. The ledger records its output; another is refused
    (exit 2), naming both, and the first goes on."""
    env, client = store
    client.create_bucket(Bucket="twin")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(sample_images()[0].read_bytes())
    xdg = dict(env, XDG_STATE_HOME=str(tmp_path / "xdg"))
    r = caption_env(sluice, xdg, tmp_path / "in", "-o", "s3://twin/x/./y", "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    r = caption_env(sluice, xdg, tmp_path / "in", "-o", "s3://twin/x/%2E/y", "--dry-run")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "holds the resume ledger of output 's3://twin/x/./y', not of 's3://twin/x/%2E/y'" \
        in r.stderr and "--state-dir" in r.stderr, r.stderr[-3000:]
    r = caption_env(sluice, xdg, tmp_path / "in", "-o", "s3://twin/x/./y/", "--dry-run")
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr[-3000:]
    shared = str(tmp_path / "state")
    r = caption_env(sluice, env, tmp_path / "in", "-o", "s3://twin/a", "--state-dir", shared,
                    "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    r = caption_env(sluice, env, tmp_path / "in", "-o", "s3://twin/b", "--state-dir", shared,
                    "--dry-run")
    assert r.returncode == 2 and "not of 's3://twin/b'" in r.stderr, r.stderr[-3000:]


def test_an_overwritten_output_keeps_its_state_folder(store, sluice, tmp_path):
    """--overwrite starts the ledger over, which empties its meta table: the
    output recorded before that was lost, and another output given the same
    --state-dir then took the first's ledger for its own (exit 0, the first
    output's parts counted as gone). The owner is recorded after the start
    over: the other output is refused (exit 2), naming both."""
    env, client = store
    client.create_bucket(Bucket="overtwin")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(sample_images()[0].read_bytes())
    shared = str(tmp_path / "state")
    for extra in ((), ("--overwrite",)):
        r = caption_env(sluice, env, tmp_path / "in", "-o", "s3://overtwin/a", "--state-dir",
                        shared, "--dry-run", *extra)
        assert r.returncode == 0, (extra, r.stderr[-3000:])
    r = caption_env(sluice, env, tmp_path / "in", "-o", "s3://overtwin/b", "--state-dir",
                    shared, "--dry-run")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "holds the resume ledger of output 's3://overtwin/a', not of 's3://overtwin/b'" \
        in r.stderr, r.stderr[-3000:]
    r = caption_env(sluice, env, tmp_path / "in", "-o", "s3://overtwin/a", "--state-dir",
                    shared, "--dry-run")
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr[-3000:]


def test_keys_xml_cannot_hold_are_listed_and_read(store, sluice, tmp_path):
    """A key holding U+0001 (legal in S3, not in XML 1.0) beside keys with
    a space, a '+', a '%' and '&<>': the listing asks for URL-encoded keys
    (encoding-type=url) and decodes them, so each object is one row read
    as named. The one key made the listing's page unreadable, and the
    whole folder one failed row ('the answer is not a ListBucketResult')."""
    env, client = store
    client.create_bucket(Bucket="xmlkeys")
    img = sample_images()[0].read_bytes()
    names = ["ctl\x01.jpg", "a b+c.jpg", "pct%41.jpg", "a&b<c>.jpg"]
    for name in names:
        client.put_object(Bucket="xmlkeys", Key=f"in/{name}", Body=img)
    r = caption_env(sluice, env, "s3://xmlkeys/in/", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "out")
    assert sorted(row["id"] for row in rows) == sorted(names), rows
    assert all(row["error"] is None for row in rows), rows


def test_a_manifest_the_store_refuses_under_item_sharding_ends_the_run(store, sluice, tmp_path):
    """A manifest in a bucket whose every GET the store refuses during one
    run of three, items shared out by place (--input-shard-size): that run
    ends (exit 1, naming the manifest, the cause and 'run it again') where
    it was one failed row for the manifest while the other runs counted its
    lines (that run exited 0 with the wrong items). Run again once the
    store answers, the three runs hold every line exactly once."""
    env, client = store
    client.create_bucket(Bucket="mcut")
    images = sample_images()[:4]
    for k, p in enumerate(images):
        client.put_object(Bucket="mcut", Key=f"img/{k}{p.suffix}", Body=p.read_bytes())
    for m in range(2):
        lines = [json.dumps({"id": f"m{m}-{i}", "image": f"../img/{i % 4}{images[i % 4].suffix}"})
                 for i in range(6)]
        client.put_object(Bucket="mcut", Key=f"m/a-00{m}.jsonl", Body="\n".join(lines) + "\n")
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
        outs = [tmp_path / f"o{k}" for k in range(3)]
        for k, out in enumerate(outs):
            proxy.refuse = ((lambda m, p, rng: m == "GET" and p == "/mcut/m/a-000.jsonl")
                            if k == 1 else None)
            r = caption_env(sluice, penv, "s3://mcut/m/a-{000..001}.jsonl", "-o", out,
                            "--input-shard", f"{k}/3", "--input-shard-size", "2")
            if k != 1:
                assert r.returncode == 0, (k, r.stderr[-3000:])
                continue
            assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
            assert "input 's3://mcut/m/a-000.jsonl'" in r.stderr, r.stderr[-3000:]
            assert "AccessDenied" in r.stderr and "run it again" in r.stderr, r.stderr[-3000:]
        proxy.refuse = None
        r = caption_env(sluice, penv, "s3://mcut/m/a-{000..001}.jsonl", "-o", outs[1],
                        "--input-shard", "1/3", "--input-shard-size", "2")
        assert r.returncode == 0, r.stderr[-3000:]
        rows = [row for out in outs for row in read_rows(out)]
        assert all(row["error"] is None for row in rows), rows
        ids = sorted(row["id"] for row in rows)
        assert ids == sorted(f"m{m}-{i}" for m in range(2) for i in range(6)), ids
    finally:
        proxy.close()


def test_a_tar_cut_inside_a_skipped_member_breaks_as_the_local_one_does(store, sluice, tmp_path):
    """A webdataset shard in a bucket cut inside a member no sample uses
    (jumped over, never fetched), or whose pax header claims 10^15 bytes,
    gives the rows the same shard gives on disk (test_inputs_bad.py,
    test_a_tar_member_skipped_past_the_shard_end_is_a_break_not_the_end):
    the samples before the break, then one failed row SHARD@OFFSET naming
    the member and that the rest is skipped; not an end as if whole."""
    env, client = store
    client.create_bucket(Bucket="cuttar")
    jpeg = sample_images()[0].read_bytes()
    npy = bytes(300_000)  # past the first GETs: a jump, not a read
    whole = wds_shard([(f"{k}.{ext}", jpeg if ext == "jpg" else npy)
                       for k in range(3) for ext in ("jpg", "npy")])
    cut = whole[:whole.index(b"1.npy") + 512 + 50_000]  # inside sample 1's .npy
    pax = wds_shard([(f"{k}.jpg", jpeg) for k in range(3)], pax={"1.jpg": str(10**15)})
    for name, data, member in (("s.tar", cut, "member '1.npy'"),
                               ("p.tar", pax, "member '1.jpg' (1000000000000000 bytes)")):
        local = tmp_path / "local" / name
        local.parent.mkdir(exist_ok=True)
        local.write_bytes(data)
        client.put_object(Bucket="cuttar", Key=f"w/{name}", Body=data)
        got = {}
        for where, src in (("local", local), ("bucket", f"s3://cuttar/w/{name}")):
            out = tmp_path / f"{name}-{where}"
            r = caption_env(sluice, env, src, "-o", out, "--dry-run")
            assert r.returncode == 3, (where, r.stderr[-3000:])
            got[where] = {row["id"]: row["error"] for row in read_rows(out)}
        assert got["bucket"].keys() == got["local"].keys(), got
        [broken] = [k for k in got["bucket"] if k.startswith(f"{name}@")]
        assert set(got["bucket"]) == {f"{name}/0", broken}, got
        err = got["bucket"][broken]
        assert member in err and f"s3://cuttar/w/{name}" in err, err
        assert got["bucket"][f"{name}/0"] is None
        if name == "s.tar":
            assert "truncated" in err and "the rest of the shard is skipped" in err, err


def test_a_tar_or_parquet_cut_short_under_item_sharding_ends_the_run(store, sluice, tmp_path):
    """A tar shard, a Parquet or an Arrow file whose ranged GET the store refuses
    (after retries) during one run only, from its first read or midway, the input shared out by item
    (--input-shard K/N with more runs than files, as MPI ranks): that run
    ends (exit 1, naming the file, the cause and 'run it again'); run again
    once the store answers, the three runs hold every sample exactly once.
    Unsharded, the cut stays one failed row naming the file."""
    import io
    import pyarrow as pa
    import pyarrow.parquet as pq
    env, client = store
    client.create_bucket(Bucket="cut")
    images = sample_images()[:4]
    shard = wds_shard([(f"s{k:02d}.jpg", images[k % 4].read_bytes()) for k in range(10)])
    assert len(shard) > 4 * 65536
    client.put_object(Bucket="cut", Key="t/a-000.tar", Body=shard)
    client.put_object(Bucket="cut", Key="t/a-001.tar",
                      Body=wds_shard([(f"z{k}.jpg", images[k % 4].read_bytes()) for k in range(4)]))
    # A 1 MiB binary column nothing reads keeps the row groups' images
    # apart, so each is a GET of its own (not one read-ahead of the file).
    table = pa.table({"image": pa.array([{"bytes": images[k % 4].read_bytes(), "path": f"{k}.jpg"}
                                         for k in range(10)],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "blob": pa.array([os.urandom(1 << 20) for _ in range(10)], pa.binary()),
                      "label": pa.array(range(10), pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2, compression="none")
    client.put_object(Bucket="cut", Key="p/a-000.parquet", Body=buf.getvalue())
    client.put_object(Bucket="cut", Key="p/a-001.parquet", Body=buf.getvalue())
    import pyarrow.ipc as ipc
    stream = io.BytesIO()
    with ipc.new_stream(stream, table.schema) as w:
        w.write_table(table, max_chunksize=2)
    client.put_object(Bucket="cut", Key="a/a-000.arrow", Body=stream.getvalue())
    client.put_object(Bucket="cut", Key="a/a-001.arrow", Body=stream.getvalue())
    group = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata.row_group(1)
    pq_second = min(group.column(c).data_page_offset for c in range(group.num_columns))
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    try:
        penv = dict(env, AWS_ENDPOINT_URL=proxy.url)
        for inputs, cut, total in (("s3://cut/t/a-{000..001}.tar", "/cut/t/a-000.tar", 14),
                                   ("s3://cut/p/a-{000..001}.parquet", "/cut/p/a-000.parquet", 20),
                                   ("s3://cut/a/a-{000..001}.arrow", "/cut/a/a-000.arrow", 20)):
            # The tar's second block, the Parquet file's second row group
            # on, the Arrow file's last two thirds: refused every time (so
            # after io/s3.h's retries too).
            first = (65536 if cut.endswith(".tar") else pq_second if cut.endswith(".parquet")
                     else len(stream.getvalue()) // 3)

            def refuse(m, p, rng, cut=cut, first=first):
                if m != "GET" or p != cut or not rng or rng.startswith("bytes=-"):
                    return False
                return int(rng.split("=")[1].split("-")[0]) >= first
            name = cut.rsplit("/", 1)[1]
            # Runs 0 and 2 read the file whole; run 1's read is cut short.
            # It went on before (exit 0): its stream was shorter than the
            # others' by the rest of the file, so its shards after the cut
            # held the wrong samples (the tar: 4 of 14 lost, 2 twice).
            outs = [tmp_path / f"{name}-{k}" for k in range(3)]
            for k, out in enumerate(outs):
                proxy.refuse = refuse if k == 1 else None
                r = caption_env(sluice, penv, inputs, "-o", out,
                                "--input-shard", f"{k}/3", "--input-shard-size", "2")
                if k != 1:
                    assert r.returncode == 0, (name, k, r.stderr[-3000:])
                    continue
                assert r.returncode == 1, (name, k, r.returncode, r.stderr[-3000:])
                assert f"input 's3://cut{cut[4:]}'" in r.stderr, r.stderr[-3000:]
                assert "AccessDenied" in r.stderr and "run it again" in r.stderr, r.stderr[-3000:]
            # Its first read refused too (run 1 again, resuming): the same
            # end. It was one row for the file where the other runs counted
            # its items: the shards after it shifted (this run exit 0, its
            # share the wrong items).
            proxy.refuse = lambda m, p, rng, cut=cut: m == "GET" and p == cut
            r = caption_env(sluice, penv, inputs, "-o", outs[1],
                            "--input-shard", "1/3", "--input-shard-size", "2")
            assert r.returncode == 1, (name, r.returncode, r.stderr[-3000:])
            assert f"input 's3://cut{cut[4:]}'" in r.stderr, r.stderr[-3000:]
            assert "AccessDenied" in r.stderr and "run it again" in r.stderr, r.stderr[-3000:]
            # Unsharded: one failed row names the file, the rows before the cut read.
            proxy.refuse = refuse
            r = caption_env(sluice, penv, inputs, "-o", tmp_path / f"{name}-all")
            assert r.returncode == 3, r.stderr[-3000:]
            failed = [row for row in read_rows(tmp_path / f"{name}-all") if row["error"]]
            assert len(failed) == 1 and f"s3://cut{cut[4:]}" in failed[0]["error"], failed
            # The store answers again: run 1 run again resumes; every sample once.
            proxy.refuse = None
            r = caption_env(sluice, penv, inputs, "-o", outs[1],
                            "--input-shard", "1/3", "--input-shard-size", "2")
            assert r.returncode == 0, r.stderr[-3000:]
            rows = [json.loads(line) for out in outs for part in sorted(out.glob("part-*.jsonl"))
                    for line in part.read_text().splitlines()]
            assert all(row["error"] is None for row in rows), rows
            ids = [row["id"] for row in rows]
            assert len(ids) == total and len(set(ids)) == total, sorted(ids)
    finally:
        proxy.close()
