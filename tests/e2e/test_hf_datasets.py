"""hf://datasets/ORG/NAME[@REVISION][/PATTERN] inputs (io/hf.h, docs/inputs.md
"Hugging Face datasets"): the repository listed through the hub's tree API
(every page), its files pinned to the revision's commit and read in place by
ranged GETs, the token sent to the hub's host and never to the CDN host its
redirects lead to; errors (no repository, a private one, no match, no such
revision, offline) stop the command with exit 2 naming the input; a killed
run resumes with the rest. The hub is a local stand-in (tests/e2e/hubserver.py)
laid out as the real one: no hub is reachable from this machine."""
import io
import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import TINY, read_rows, sample_images, wds_shard
from hubserver import Hub

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TOKEN = "hf_secret_test_token"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
QUIET = ("--max-tokens", "4", "--metrics-addr", "off", "--show", "0")


def parquet(images, first_label, row_group_size=2):
    buf = io.BytesIO()
    pq.write_table(pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images], IMAGE),
        "label": pa.array(range(first_label, first_label + len(images)), pa.int64())}),
        buf, row_group_size=row_group_size)
    return buf.getvalue()


def arrow_stream(images, first_label):
    """A shard as datasets' save_to_disk writes it: the Arrow stream format,
    record batches of two rows."""
    import pyarrow.ipc as ipc
    buf = io.BytesIO()
    table = pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images], IMAGE),
        "label": pa.array(range(first_label, first_label + len(images)), pa.int64())})
    with ipc.new_stream(buf, table.schema) as w:
        w.write_table(table, max_chunksize=2)
    return buf.getvalue()


def lists_parquet(images):
    """A Sequence(Image()) column as the datasets library writes it:
    list<struct<bytes, path>>."""
    buf = io.BytesIO()
    pq.write_table(pa.table({
        "images": pa.array([[{"bytes": p.read_bytes(), "path": None} for p in images[:2]],
                            [{"bytes": images[2].read_bytes(), "path": None}]], pa.list_(IMAGE)),
        "label": pa.array([100, 101], pa.int64())}), buf)
    return buf.getvalue()


def caption(sluice, hub, *args, token=True, extra_env=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_ENDPOINT"] = hub.endpoint
    env.update(extra_env or {})
    if token:
        env["HF_TOKEN"] = TOKEN
    return subprocess.run([str(sluice.binary), "caption", *map(str, args),
                           "--model", str(TINY / "model.gguf"),
                           "--mmproj", str(TINY / "mmproj.gguf"), *QUIET],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def hub():
    imgs = sample_images()
    with Hub({}) as h:
        h.token = TOKEN
        h.tree_page = 2  # the listing comes in pages: Link: <...>; rel="next"
        h.main_sha = h.add_dataset("org/pics", {
            "README.md": b"# pics\n",
            "data/train-00000-of-00002.parquet": parquet(imgs[:3], 0),
            "data/train-00001-of-00002.parquet": parquet(imgs[3:6], 3),
            "lists/train-00000-of-00001.parquet": lists_parquet(imgs),
            "extra/old.tar": wds_shard([("a.jpg", imgs[0].read_bytes())]),
        })
        h.v1_sha = h.add_dataset("org/pics", {
            "data/train-00000-of-00001.parquet": parquet(imgs[:2], 50)}, revision="v1")
        h.conv_sha = h.add_dataset("org/pics", {
            "default/train/0000.parquet": parquet(imgs[:1], 70)},
            revision="refs/convert/parquet")
        h.add_dataset("org/shards", {
            "shards/000.tar": wds_shard([m for k, p in enumerate(imgs[:3])
                                         for m in ((f"s{k}.jpg", p.read_bytes()),
                                                   (f"s{k}.txt", f"alt {k}".encode()))]),
            "shards/001.tar": wds_shard([("t0.jpg", imgs[3].read_bytes())]),
            "meta.json": b"{}"})
        h.add_dataset("org/saved", {
            "train/data-00000-of-00002.arrow": arrow_stream(imgs[:3], 0),
            "train/data-00001-of-00002.arrow": arrow_stream(imgs[3:5], 3),
            "train/dataset_info.json": b"{}", "train/state.json": b"{}",
            "shards/000.tar": wds_shard([("a.jpg", imgs[0].read_bytes())])})
        h.add_dataset("org/secret", {"data/x.parquet": parquet(imgs[:1], 0)}, private=True)
        h.add_dataset("org/odd", {"data/train 00.parquet": parquet(imgs[:1], 80),
                                  "data/50%#1?.parquet": parquet(imgs[1:2], 90)})
        yield h


def data_requests(hub):
    return [r for r in hub.requests if "/resolve/" in r["path"] or r["path"].startswith("/lfs/")]


def test_a_dataset_is_captioned_in_place(sluice, hub, tmp_path):
    """No pattern: every .parquet file of main (not the README, not the .tar),
    listed across pages; every row once, ids FILE:ROW from the repository
    path, columns passed through, a Sequence(Image()) row with its images;
    every data GET ranged and pinned to the commit; the token on the hub's
    host only, never on the CDN host the 302 leads to."""
    r = caption(sluice, hub, "hf://datasets/org/pics", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(tmp_path / "o")}
    want = {f"data/train-00000-of-00002.parquet:{i}" for i in range(3)} | \
           {f"data/train-00001-of-00002.parquet:{i}" for i in range(3)} | \
           {f"lists/train-00000-of-00001.parquet:{i}" for i in range(2)}
    assert set(rows) == want
    assert all(row["error"] is None for row in rows.values()), rows
    assert sorted(rows[f"data/train-0000{f}-of-00002.parquet:{i}"]["label"]
                  for f in range(2) for i in range(3)) == list(range(6))
    assert rows["lists/train-00000-of-00001.parquet:0"]["image_count"] == 2
    assert rows["lists/train-00000-of-00001.parquet:1"]["label"] == 101
    assert "8 of 8 (100%)" in [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]

    trees = [q for q in hub.requests if "/tree/" in q["path"]]
    assert len(trees) >= 2 and any("cursor=" in q["path"] for q in trees)  # pages followed
    assert all(f"/tree/{hub.main_sha}" in q["path"] for q in trees)  # listed at the commit
    data = data_requests(hub)
    resolves = [q for q in data if "/resolve/" in q["path"]]
    assert resolves and all(f"/resolve/{hub.main_sha}/" in q["path"] for q in resolves)
    assert not [q for q in data if "old.tar" in q["path"] or "README" in q["path"]]
    gets = [q for q in data if q["method"] == "GET"]
    assert gets and all(q["range"] for q in gets), [q for q in gets if not q["range"]]
    lfs = [q for q in gets if q["path"].startswith("/lfs/")]
    assert lfs and all(q["host"].startswith("localhost:") for q in lfs)
    # The token: on every request to the hub's own host, on none to the CDN.
    hub_host = [q for q in hub.requests if q["host"].startswith("127.0.0.1:")]
    assert hub_host and all(q["auth"] == f"Bearer {TOKEN}" for q in hub_host)
    assert all(q["auth"] is None for q in lfs), lfs
    assert TOKEN not in r.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_hub_is_asked_once_for_the_run_and_its_count(sluice, hub, tmp_path, fmt):
    """The progress total comes from the files the run's source listed: the
    revision is resolved once and each page of the tree fetched once (the
    count and, for a Parquet output, the schema's first rows read the same
    list; before, each listed the dataset again), and the total still
    equals the rows read."""
    hub.requests.clear()
    r = caption(sluice, hub, "hf://datasets/org/pics", "-o", tmp_path / "o", "--format", fmt)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (read_rows(tmp_path / "o") if fmt == "jsonl" else
            pq.read_table(tmp_path / "o" / "part-00000.parquet").to_pylist())
    assert len(rows) == 8 and all(row["error"] is None for row in rows)
    revisions = [q["path"] for q in hub.requests if "/revision/" in q["path"]]
    assert revisions == ["/api/datasets/org/pics/revision/main"]
    trees = [q["path"] for q in hub.requests if "/tree/" in q["path"]]
    assert len(trees) >= 2 and any("cursor=" in t for t in trees)  # several pages ...
    assert sorted(Counter(trees).values()) == [1] * len(trees), trees  # ... each once
    progress = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
    assert f"{len(rows)} of {len(rows)} (100%)" in progress
    metrics = (tmp_path / "o" / "_metrics.prom").read_text().splitlines()
    assert f"sluice_input_rows {len(rows)}" in metrics


def test_a_pattern_a_revision_and_a_folder(sluice, hub, tmp_path):
    """A glob on the repository path; @v1 (its own files, URLs pinned to its
    commit); @refs%2Fconvert%2Fparquet (a revision with '/', as HfFileSystem
    writes it) with a folder as the pattern."""
    r = caption(sluice, hub, "hf://datasets/org/pics/data/train-00001-*.parquet",
                "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(row["id"] for row in read_rows(tmp_path / "p")) == \
        [f"data/train-00001-of-00002.parquet:{i}" for i in range(3)]

    r = caption(sluice, hub, "hf://datasets/org/pics/**/train-*.parquet", "-o", tmp_path / "s")
    assert r.returncode == 0, r.stderr[-3000:]
    assert {row["id"].split(":")[0] for row in read_rows(tmp_path / "s")} == \
        {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
         "lists/train-00000-of-00001.parquet"}

    hub.requests.clear()
    r = caption(sluice, hub, "hf://datasets/org/pics@v1", "-o", tmp_path / "v")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "v")
    assert sorted(row["label"] for row in rows) == [50, 51]
    assert {row["id"] for row in rows} == {"data/train-00000-of-00001.parquet:0",
                                           "data/train-00000-of-00001.parquet:1"}
    resolves = [q["path"] for q in hub.requests if "/resolve/" in q["path"]]
    assert resolves and all(f"/resolve/{hub.v1_sha}/" in p for p in resolves), resolves
    assert hub.v1_sha != hub.main_sha

    r = caption(sluice, hub, "hf://datasets/org/pics@refs%2Fconvert%2Fparquet/default",
                "-o", tmp_path / "c")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [row["label"] for row in read_rows(tmp_path / "c")] == [70]


def test_file_names_a_url_must_quote(sluice, hub, tmp_path):
    """Space, '%', '#' and '?' in a repository path: quoted in the URL (the
    stand-in hub unquotes them as the hub does), the path as is in ids."""
    r = caption(sluice, hub, "hf://datasets/org/odd", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(tmp_path / "o")}
    assert rows.keys() == {"data/train 00.parquet:0", "data/50%#1?.parquet:0"}
    assert sorted(row["label"] for row in rows.values()) == [80, 90]
    paths = [q["path"] for q in hub.requests if "/resolve/" in q["path"]]
    assert any("/data/train%2000.parquet" in p for p in paths), paths
    assert any("/data/50%25%231%3F.parquet" in p for p in paths), paths


def test_a_dataset_of_tar_shards(sluice, hub, tmp_path):
    """No Parquet file: the .tar shards, streamed by ranged GETs; WebDataset
    ids from the repository path."""
    r = caption(sluice, hub, "hf://datasets/org/shards", "-o", tmp_path / "o", token=False)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(tmp_path / "o")}
    assert set(rows) == {"shards/000.tar/s0", "shards/000.tar/s1", "shards/000.tar/s2",
                         "shards/001.tar/t0"}
    assert rows["shards/000.tar/s1"]["txt"] == "alt 1"
    gets = [q for q in data_requests(hub) if q["method"] == "GET"]
    assert gets and all(q["range"] for q in gets)
    assert all(q["auth"] is None for q in hub.requests)  # no HF_TOKEN: none sent


def test_a_dataset_saved_to_disk_and_uploaded(sluice, hub, tmp_path):
    """No Parquet file but Arrow files (a save_to_disk folder uploaded):
    those, not the tar shard beside them, read in place by ranged GETs;
    ids from the repository path, every column there."""
    r = caption(sluice, hub, "hf://datasets/org/saved", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(tmp_path / "o")}
    assert set(rows) == {f"train/data-00000-of-00002.arrow:{i}" for i in range(3)} | \
        {f"train/data-00001-of-00002.arrow:{i}" for i in range(2)}
    assert all(row["error"] is None and row["caption"] for row in rows.values()), rows
    assert sorted(row["label"] for row in rows.values()) == list(range(5))
    gets = [q for q in data_requests(hub) if q["method"] == "GET"]
    assert gets and all(q["range"] for q in gets), gets
    assert not [q for q in gets if ".tar" in q["path"] or ".json" in q["path"]]


@pytest.mark.parametrize("ref,env,token,words", [
    ("hf://datasets/org/nothing", {}, True, ["hf://datasets/org/nothing", "404",
                                             "no such dataset"]),
    ("hf://datasets/org/secret", {}, False, ["hf://datasets/org/secret", "401",
                                             "set HF_TOKEN"]),
    ("hf://datasets/org/pics/data/*.csv", {}, True, ["hf://datasets/org/pics/data/*.csv",
                                                     "matches no file"]),
    ("hf://datasets/org/pics/nofolder", {}, True, ["matches no file", "nofolder"]),
    ("hf://datasets/org/pics@v9", {}, True, ["hf://datasets/org/pics@v9", "no revision 'v9'"]),
    ("hf://datasets/org/pics", {"HF_HUB_OFFLINE": "1"}, True, ["hf://datasets/org/pics",
                                                               "HF_HUB_OFFLINE"]),
    ("hf://datasets/org/../x", {}, True, ["hf://datasets/org/../x", "plain names"]),
])
def test_errors_stop_before_the_model_loads(sluice, hub, tmp_path, ref, env, token, words):
    r = caption(sluice, hub, ref, "-o", tmp_path / "o", token=token, extra_env=env, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-2000:])
    assert not list((tmp_path / "o").glob("part-*"))
    assert not data_requests(hub)  # nothing read


def test_retries_follow_download_retries_and_an_unreachable_hub(sluice, hub, tmp_path):
    """A 503 from the CDN on the first GET of each range: retried by default
    (every row there), failing the file's rows with --download-retries 0
    (the flag reaches the ranged reads; a row group is read by the run
    alone, so the count cannot take its 503); a hub that cannot be reached
    stops the command (exit 1)."""
    hub.fail_lfs = True
    r = caption(sluice, hub, "hf://datasets/org/pics@v1", "-o", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-3000:]
    assert hub.failed_lfs and all(row["error"] is None for row in read_rows(tmp_path / "a"))
    hub.failed_lfs.clear()
    r = caption(sluice, hub, "hf://datasets/org/pics@v1", "-o", tmp_path / "b",
                "--download-retries", "0")
    rows = read_rows(tmp_path / "b")
    assert rows and all("HTTP 503" in row["error"] and "train-00000-of-00001.parquet" in row["error"]
                        for row in rows), rows
    r = caption(sluice, hub, "hf://datasets/org/pics", "-o", tmp_path / "c",
                "--download-retries", "0", extra_env={"HF_ENDPOINT": "http://127.0.0.1:1"})
    assert r.returncode == 1 and "cannot reach the hub" in r.stderr, r.stderr[-2000:]
    assert "hf://datasets/org/pics" in r.stderr


def test_a_hub_redirecting_in_a_loop_is_asked_once_not_again(sluice, hub, tmp_path):
    """A redirect loop is no passing fault: the listing's GET gives up at
    its first try's redirect limit (1 + 5 requests), naming the loop, where
    it tried three times (18 requests) as for a 503."""
    hub.loop = ("/api/datasets/org/pics",)
    r = caption(sluice, hub, "hf://datasets/org/pics", "-o", tmp_path / "o", timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "hf://datasets/org/pics" in r.stderr and "redirect loop" in r.stderr, r.stderr[-2000:]
    asked = [q for q in hub.requests if q["path"].startswith("/api/datasets/org/pics")]
    assert len(asked) == 6, [q["path"] for q in asked]


def test_the_private_dataset_with_its_token_and_several_datasets(sluice, hub, tmp_path):
    """With HF_TOKEN the private dataset reads; two datasets in one job name
    their files ORG/NAME/PATH; one dataset given twice is refused."""
    r = caption(sluice, hub, "hf://datasets/org/secret", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [row["id"] for row in read_rows(tmp_path / "o")] == ["data/x.parquet:0"]
    r = caption(sluice, hub, "hf://datasets/org/secret", "hf://datasets/org/pics@v1",
                "-o", tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(row["id"] for row in read_rows(tmp_path / "two")) == [
        "org/pics/data/train-00000-of-00001.parquet:0",
        "org/pics/data/train-00000-of-00001.parquet:1", "org/secret/data/x.parquet:0"]
    r = caption(sluice, hub, "hf://datasets/org/secret", "hf://datasets/org/secret/data",
                "-o", tmp_path / "twice")
    assert r.returncode == 2 and "selected twice" in r.stderr and "data/x.parquet" in r.stderr
    r = caption(sluice, hub, "hf://datasets/org/secret", str(tmp_path), "-o", tmp_path / "mix")
    assert r.returncode == 2 and "inputs mix hf://datasets/" in r.stderr, r.stderr[-2000:]


def test_kill_9_then_resume_reads_the_rest(sluice, hub, tmp_path):
    """A run killed after its first part: the same command finishes with
    every row exactly once, the second run captioning only the rest."""
    imgs = sample_images()
    files = {f"data/part-{k:02d}.parquet": parquet(imgs * 2, 100 * k, row_group_size=4)
             for k in range(3)}
    hub.add_dataset("org/big", files)
    want = sorted(f"data/part-{k:02d}.parquet:{i}" for k in range(3) for i in range(2 * len(imgs)))
    out = tmp_path / "o"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN)
    cmd = [str(sluice.binary), "caption", "hf://datasets/org/big", "-o", str(out),
           "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
           "--shard-rows", "4", "--max-tokens", "8", "--metrics-addr", "off", "--show", "0"]
    with open(tmp_path / "killed.log", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not list(out.glob("part-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL

    def ids():
        return [json.loads(line)["id"] for p in sorted(out.glob("part-*"))
                for line in p.read_text().splitlines()]
    before = ids()
    assert 0 < len(before) < len(want)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = ids()
    assert not [i for i, n in Counter(after).items() if n > 1]
    assert sorted(after) == want
    new = after[len(before):]
    assert sorted(new) == sorted(set(want) - set(before))


def test_a_branch_that_moved_is_refused_and_its_first_commit_goes_on(sluice, hub, tmp_path):
    """A job read at @main's commit C1; main then moves to C2: the same
    command is refused (dataset_commits differ) rather than mixing rows of
    two commits; naming @C1 goes on with the first run's files, each row
    once."""
    imgs = sample_images()
    first = hub.add_dataset("org/moving", {"data/a.parquet": parquet(imgs[:4], 0)})
    out = tmp_path / "out"
    r = caption(sluice, hub, "hf://datasets/org/moving", "-o", out, "--limit", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(read_rows(out)) == 2
    # The commit read, where the user finds it to name it later.
    assert json.loads((out / "_summary.json").read_text())["dataset_commits"] == \
        [f"org/moving@{first}"]
    second = hub.add_dataset("org/moving", {"data/a.parquet": parquet(imgs[:4], 500)})
    assert second != first
    r = caption(sluice, hub, "hf://datasets/org/moving", "-o", out)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "dataset_commits" in r.stderr
    r = caption(sluice, hub, f"hf://datasets/org/moving@{first}", "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == [f"data/a.parquet:{i}" for i in range(4)]
    assert sorted(row["label"] for row in rows) == [0, 1, 2, 3]  # all from the first commit
