"""End-to-end tests of `--format webdataset` (io/wds_sink.c, docs/output.md
"WebDataset"): tar shards part-NNNNN.tar of one sample per row, read back
with the `webdataset` package and with Python's tarfile. Each sample's .json
is the row the JSONL output gives for the same settings (all fields but
timings), its image member the source file's bytes under the sniffed
extension, its .txt the caption; a failed row is its .json alone. A run killed mid-way and run
again writes every id once across the shards; sluice reads its own shards
back as input (the earlier row's fields as input_* columns); `sluice batch`
refuses the format; an s3:// output gets the same shards."""
import io
import json
import pathlib
import re
import signal
import subprocess
import tarfile
import time
from collections import Counter

import pytest

from conftest import SAMPLES, TINY, sample_copies, sample_images

ARGS = ("--max-tokens", "12", "--parallel", "1", "--metrics-addr", "off", "--show", "0")
# A source file's suffix -> the member's extension (sniffed from the bytes).
EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".gif": "gif",
       ".tif": "tif", ".tiff": "tif"}
KEY = re.compile(r"^(\d{5})_(\d{6})$")


def shards(out: pathlib.Path) -> list[pathlib.Path]:
    return sorted(out.glob("part-*.tar"))


def tar_samples(path) -> list[tuple[str, dict[str, bytes]]]:
    """A shard's samples in order, (key, {ext: bytes}), with tarfile; every
    member a regular file of mode 0644, mtime 0, a sample's members together."""
    samples = []
    with (tarfile.open(fileobj=path) if isinstance(path, io.BytesIO) else tarfile.open(path)) as tar:
        for m in tar.getmembers():
            assert m.isreg() and m.mode == 0o644 and m.mtime == 0, (m.name, m.mode, m.mtime)
            key, ext = m.name.split(".", 1)
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            assert ext not in samples[-1][1], f"{m.name} twice"
            samples[-1][1][ext] = tar.extractfile(m).read()
    assert len({k for k, _ in samples}) == len(samples), "a key's members are not together"
    return samples


def ids_in(out: pathlib.Path) -> list[str]:
    return [json.loads(s["json"])["id"] for p in shards(out) for _, s in tar_samples(p)]


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "timings"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> pathlib.Path:
    """Four sample JPEGs, a GIF and a PNG, and two broken inputs (failed rows)."""
    root = tmp_path_factory.mktemp("wds") / "in"
    (root / "broken").mkdir(parents=True)
    for p in sample_images()[:4] + [SAMPLES / "variants" / "chelsea.gif",
                                    SAMPLES / "variants" / "camera_gray.png"]:
        (root / p.name).symlink_to(p)
    (root / "broken" / "zero-bytes.jpg").write_bytes(b"")
    (root / "broken" / "text.png").write_text("this is not a png\n")
    return root


@pytest.fixture(scope="module")
def runs(sluice, mixed, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """(JSONL output, WebDataset output) of `mixed` with the same settings."""
    base = tmp_path_factory.mktemp("runs")
    a = sluice.caption(mixed, base / "j", *ARGS)
    b = sluice.caption(mixed, base / "w", *ARGS, "--format", "webdataset",
                       "--include-image-bytes", "--shard-rows", "3")
    assert a.returncode == b.returncode == 3, b.stderr[-2000:]  # the broken inputs failed
    return base / "j", base / "w"


def test_shards_hold_the_jsonl_rows_and_the_images(runs):
    wds = pytest.importorskip("webdataset")
    jsonl_out, out = runs
    lines = [json.loads(t) for p in sorted(jsonl_out.glob("part-*.jsonl"))
             for t in p.read_text(encoding="utf-8").splitlines()]
    jsonl = {r["id"]: r for r in lines}
    assert not list(out.glob("part-*.jsonl")) and not list(out.glob(".part-*"))
    parts = shards(out)
    assert [p.name for p in parts] == [f"part-{k:05d}.tar" for k in range(len(parts))]
    assert len(parts) == -(-len(lines) // 3)

    by_tarfile = {}
    for number, part in enumerate(parts):
        samples = tar_samples(part)
        for index, (key, members) in enumerate(samples):
            # The part's number and the row's index in it: unique, no dots.
            assert KEY.match(key).groups() == (f"{number:05d}", f"{index:06d}"), key
            row = json.loads(members["json"])
            assert "image_bytes" not in row
            assert without_timings(row) == without_timings(jsonl[row["id"]]), row["id"]
            assert set(row["timings"]) == set(jsonl[row["id"]]["timings"])
            images = {e: d for e, d in members.items() if e not in ("json", "txt")}
            if row["error"] is not None:
                assert images == {}, row["id"]  # a failed row: its .json alone
                assert "txt" not in members, row["id"]
            else:
                # The caption alone, as img2dataset's KEY.txt (what
                # open_clip reads as a sample's text).
                assert members["txt"].decode("utf-8") == jsonl[row["id"]]["caption"], row["id"]
                source = pathlib.Path(row["path"])
                assert images == {EXT[source.suffix.lower()]: source.read_bytes()}, row["id"]
            by_tarfile[key] = members
    assert sorted(r["id"] for r in (json.loads(m["json"]) for m in by_tarfile.values())) == \
        sorted(jsonl)
    assert any(r["error"] for r in lines) and any("gif" in m for m in by_tarfile.values())

    # The webdataset package reads the same samples, in the same order.
    seen = []
    for s in wds.WebDataset([str(p) for p in parts], shardshuffle=False):
        members = {k: v for k, v in s.items() if not k.startswith("__")}
        assert members == by_tarfile[s["__key__"]], s["__key__"]
        seen.append(s["__key__"])
    assert seen == list(by_tarfile)
    # As a trainer reads it: (image, text) pairs of the captioned rows.
    pairs = list(wds.WebDataset([str(p) for p in parts], shardshuffle=False)
                 .select(lambda s: "txt" in s).to_tuple("jpg;png;gif", "txt"))
    ok = [r for r in lines if r["error"] is None]
    assert sorted(t.decode() for _, t in pairs) == sorted(r["caption"] for r in ok)
    assert len(pairs) == len(ok)

    summary = json.loads((out / "_summary.json").read_text())
    assert summary["params"]["format"] == "webdataset"


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("wds-resume") / "in"
    sample_copies(root, 4)
    return root


def command(sluice, src, out, fmt="webdataset") -> list[str]:
    return [str(sluice.binary), "caption", str(src), "-o", str(out), "--model",
            str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"), "--max-tokens", "8",
            "--metrics-addr", "off", "--show", "0", "--format", fmt, "--include-image-bytes",
            "--shard-rows", "8"]


def test_killed_then_rerun_writes_every_id_once(sluice, big, tmp_path):
    out = tmp_path / "out"
    want = sorted(str(p.relative_to(big)) for p in big.rglob("*") if p.is_file())
    with open(tmp_path / "killed.log", "w") as err:
        proc = subprocess.Popen(command(sluice, big, out), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not shards(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=300) == -signal.SIGKILL
    before = ids_in(out)
    assert 0 < len(before) < len(want), "the kill should land mid-run"
    assert len(before) % 8 == 0, "only whole parts are committed"
    kept = {p.name: p.read_bytes() for p in shards(out)}

    r = subprocess.run(command(sluice, big, out), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = ids_in(out)
    assert not [i for i, n in Counter(ids).items() if n > 1], "an id written twice"
    assert sorted(ids) == want
    assert not list(out.glob(".part-*.tmp-*"))
    assert {name: (out / name).read_bytes() for name in kept} == kept
    # Every key unique across the output, too.
    keys = [k for p in shards(out) for k, _ in tar_samples(p)]
    assert len(set(keys)) == len(keys) == len(want)
    # The format is one of the settings a rerun must keep.
    r = subprocess.run(command(sluice, big, out, "parquet"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "format" in r.stderr, r.stderr[-2000:]


def test_sluice_reads_its_own_shards_back(sluice, runs, tmp_path):
    first = runs[1]
    earlier = {}
    for p in shards(first):
        for key, members in tar_samples(p):
            earlier[f"{p.name}/{key}"] = json.loads(members["json"])
    again = tmp_path / "again"
    r = sluice.caption(str(first / "part-*.tar"), again, *ARGS)
    assert r.returncode == 3, r.stderr[-2000:]
    rows = [json.loads(t) for p in sorted(again.glob("part-*.jsonl"))
            for t in p.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(earlier)
    for row in rows:
        old = earlier[row["id"]]
        # The earlier row's fields come back as pass-through columns; those
        # named as sluice's own (id, caption, timings, ...) as input_<name>.
        for k, v in old.items():
            assert row[f"input_{k}"] == v, (row["id"], k)
        if old["error"] is None:
            assert row["error"] is None, row
            assert row["txt"] == old["caption"], row  # the .txt member, column txt
            assert (row["source_width"], row["source_height"]) == \
                (old["source_width"], old["source_height"])
        else:  # no image member: the sample fails, naming the shard and key
            assert "has no image" in row["error"], row


def test_batch_refuses_the_format(sluice, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"custom_id": "a", "method": "POST",
                                    "url": "/v1/chat/completions",
                                    "body": {"messages": [{"role": "user", "content": "hi"}]}})
                        + "\n")
    r = sluice.run("batch", requests, "-o", tmp_path / "o", "--model", TINY / "model.gguf",
                   "--format", "webdataset")
    assert r.returncode == 2
    assert "--format" in r.stderr and "webdataset" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    # Without image bytes a caption job may write shards of .json alone;
    # JSONL cannot hold the bytes.
    r = sluice.caption(SAMPLES, tmp_path / "x", "--include-image-bytes")
    assert r.returncode == 2 and "--format parquet or webdataset" in r.stderr


def test_shards_in_a_bucket(sluice, tmp_path):
    pytest.importorskip("moto")
    from s3_store import moto_store
    with moto_store() as (env, client):
        client.create_bucket(Bucket="outs")
        inputs = tmp_path / "in"
        inputs.mkdir()
        for p in sample_images()[:5]:
            (inputs / p.name).symlink_to(p)
        base = [str(sluice.binary), "caption", "--model", str(TINY / "model.gguf"), "--mmproj",
                str(TINY / "mmproj.gguf"), *ARGS]
        r = subprocess.run(base + [str(inputs), "-o", "s3://outs/wds", "--state-dir",
                                   str(tmp_path / "state"), "--format", "webdataset",
                                   "--include-image-bytes", "--shard-rows", "2"],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="outs", Prefix="wds/part-")
                      ["Contents"])
        assert keys == ["wds/part-00000.tar", "wds/part-00001.tar", "wds/part-00002.tar"]
        ids = []
        for k in keys:
            body = client.get_object(Bucket="outs", Key=k)["Body"].read()
            for key, members in tar_samples(io.BytesIO(body)):
                row = json.loads(members["json"])
                assert members["jpg"] == (inputs / row["id"]).read_bytes()
                ids.append(row["id"])
        assert sorted(ids) == sorted(p.name for p in inputs.iterdir())
        # ... and read back from the bucket as input.
        r = subprocess.run(base + ["s3://outs/wds/part-{00000..00002}.tar", "-o",
                                   str(tmp_path / "again")],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(t) for t in (tmp_path / "again" / "part-00000.jsonl").read_text()
                .splitlines()]
        assert sorted(r["input_id"] for r in rows) == sorted(ids)
