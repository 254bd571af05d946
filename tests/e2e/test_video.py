"""Videos as inputs (docs/inputs.md "Videos"): a video is one row whose
frames go to the model before the prompt, each after its time. Fixture clips
are made by the ffmpeg CLI: 4 s of solid colours, a second each (red, green,
blue, white), so which frames were taken shows in their colour. Checked: the
frames an HTTP server receives (their order, colour and times), a folder of
videos and images through the llama engine (columns, a broken video failing
its row alone, --video-frames changing the prompt), tasks encoding a video
once, WebDataset and manifest videos, Parquet columns, resume refusing other
video settings, and llama-server answering a video row. Videos named by
http(s) URLs and in a bucket are read in place by ranged GETs (servers that
log what they sent): --max-download-bytes below the file's size and above
what sampling reads, a URL sniffed as a video, a server that ignores
Range, a 404, rows from an s3:// folder of videos."""
import base64
import functools
import io
import os
import json
import pathlib
import shutil
import subprocess
import tarfile

import pytest
from PIL import Image

from conftest import TINY, encodes, read_rows, sample_images
from localserver import LocalServer, RangeHandler
from openai_helpers import FakeServer, LlamaServer, completion
from s3_store import CountingProxy, moto_store

COLOURS = ["red", "green", "blue", "white"]
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def make_clip(path: pathlib.Path, codec_args: list[str], size="64x48", rate=10):
    inputs = []
    for c in COLOURS:
        inputs += ["-f", "lavfi", "-i", f"color=c={c}:s={size}:r={rate}:d=1"]
    cmd = ["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex",
           "".join(f"[{i}:v]" for i in range(4)) + "concat=n=4:v=1:a=0[v]", "-map", "[v]",
           *codec_args, str(path)]
    subprocess.run(cmd, check=True, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> pathlib.Path:
    """colours.mp4 (H.264) and colours.webm (VP9), each also alone in a
    folder of its own (mp4/, webm/: an input is a folder, not a file)."""
    d = tmp_path_factory.mktemp("clips")
    make_clip(d / "colours.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"])
    make_clip(d / "colours.webm", ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-g", "10",
                                    "-b:v", "200k"])
    for ext in ("mp4", "webm"):
        (d / ext).mkdir()
        shutil.copy(d / f"colours.{ext}", d / ext / f"colours.{ext}")
    return d


@pytest.fixture
def mixed(clips, tmp_path) -> pathlib.Path:
    """Two videos, an image and a video cut short before its index."""
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(clips / "colours.mp4", root / "a.mp4")
    shutil.copy(clips / "colours.webm", root / "b.webm")
    img = sample_images()[0]
    (root / ("c" + img.suffix)).symlink_to(img)
    data = (clips / "colours.mp4").read_bytes()
    (root / "d-broken.mp4").write_bytes(data[: len(data) // 3])
    return root


def colour_of(jpeg: bytes) -> str:
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    px = im.getpixel((im.width // 2, im.height // 2))
    return min(RGB, key=lambda c: sum((a - b) ** 2 for a, b in zip(px, RGB[c])))


def sent_parts(req: dict) -> list:
    user = [m for m in req["messages"] if m["role"] == "user"]
    assert len(user) == 1
    return user[0]["content"]


def test_frames_go_to_the_server_in_order_with_their_times(sluice, clips, tmp_path):
    bodies = []

    def answer(handler, n, body):
        bodies.append(body)
        completion(handler, "a video")

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", clips / "mp4", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, "--prompt", "What happens?", "--show", 0,
                       "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        parts = sent_parts(bodies[-1])
        # text, frame, text, frame, ... then the prompt
        assert [p["type"] for p in parts] == ["text", "image_url"] * 4 + ["text"]
        assert [p["text"] for p in parts[0:8:2]] == [f"Frame at {t} s:" for t in
                                                     ("0.5", "1.5", "2.5", "3.5")]
        assert parts[-1]["text"] == "What happens?"
        frames = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts[1:8:2]]
        assert [colour_of(f) for f in frames] == COLOURS
        row = read_rows(out)[0]
        assert row["video_frames"] == 4
        assert abs(row["video_seconds"] - 4.0) < 0.15
        assert (row["width"], row["height"]) == (64, 48)

        # Two frames, no text: the middles of two halves (1 s: green, 3 s: white).
        out2 = tmp_path / "out2"
        r = sluice.run("caption", clips / "webm", "-o", out2, "--engine", "openai",
                       "--endpoint", server.url, "--video-frames", 2, "--frame-text", "",
                       "--show", 0, "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        parts = sent_parts(bodies[-1])
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        frames = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts[:2]]
        assert [colour_of(f) for f in frames] == ["green", "white"]
        assert read_rows(out2)[0]["video_frames"] == 2


def test_a_folder_of_videos_and_images_with_the_llama_engine(sluice, mixed, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(mixed, out, "--max-tokens", 4, "--show", 0, "--metrics-addr", "off",
                       "--parallel", 2)
    assert r.returncode == 3, r.stderr  # one failed row
    rows = {row["id"]: row for row in read_rows(out)}
    assert sorted(rows) == ["a.mp4", "b.webm", "c" + sample_images()[0].suffix, "d-broken.mp4"]
    for vid in ("a.mp4", "b.webm"):
        row = rows[vid]
        assert row.get("error") is None, row
        assert row["video_frames"] == 4 and abs(row["video_seconds"] - 4.0) < 0.15
        assert (row["source_width"], row["source_height"]) == (64, 48)
        assert row["generated_tokens"] > 0
    # The same frames from two codecs: the same number of positions.
    assert rows["a.mp4"]["prompt_tokens"] == rows["b.webm"]["prompt_tokens"]
    image = rows["c" + sample_images()[0].suffix]
    assert "video_frames" not in image and "video_seconds" not in image
    broken = rows["d-broken.mp4"]
    assert broken["error_stage"] == "decode"
    assert "d-broken.mp4" in broken["error"]
    assert "video_frames" not in broken

    # Two frames: fewer positions by two frames and their texts.
    out2 = tmp_path / "out2"
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(mixed / "a.mp4", alone / "a.mp4")
    r = sluice.caption(alone, out2, "--max-tokens", 4, "--show", 0,
                       "--metrics-addr", "off", "--video-frames", 2)
    assert r.returncode == 0, r.stderr
    two = read_rows(out2)[0]
    assert two["video_frames"] == 2
    four_tokens = rows["a.mp4"]["prompt_tokens"]
    assert two["prompt_tokens"] < four_tokens
    per_frame = (four_tokens - two["prompt_tokens"]) / 2
    assert per_frame > 10  # an image's positions, not only a line of text

    # Another frame count over the same output is another job: refused.
    r = sluice.caption(mixed, out, "--max-tokens", 4, "--show", 0, "--metrics-addr", "off",
                       "--video-frames", 2)
    assert r.returncode == 2
    assert "video" in r.stderr


def test_tasks_share_one_encoding_of_the_frames(sluice, clips, tmp_path):
    one = tmp_path / "one"
    r = sluice.caption(clips / "mp4", one, "--max-tokens", 4, "--show", 0,
                       "--metrics-addr", "off", "--prompt", "What happens?")
    assert r.returncode == 0, r.stderr
    both = tmp_path / "both"
    r = sluice.caption(clips / "mp4", both, "--max-tokens", 4, "--show", 0,
                       "--metrics-addr", "off", "--parallel", 2,
                       "--task", "what=What happens?", "--task", "where=Where is it?")
    assert r.returncode == 0, r.stderr
    row = read_rows(both)[0]
    # The task with the single run's prompt gives its answer (greedy).
    assert row["what"] == read_rows(one)[0]["caption"]
    assert row["where_generated_tokens"] > 0
    assert encodes(both) == encodes(one)


def test_videos_in_tar_shards_and_manifests(sluice, clips, tmp_path):
    data = (clips / "colours.mp4").read_bytes()
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for name, payload in (("k1.mp4", data), ("k1.json", b'{"label": "colours"}')):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "wds"
    r = sluice.caption(shard, out, "--max-tokens", 2, "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    row = read_rows(out)[0]
    assert row["video_frames"] == 4 and row["label"] == "colours"

    # A manifest naming a video whose name does not say so: its bytes do.
    (tmp_path / "clip.bin").write_bytes(data)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "clip.bin", "label": "x"}) + "\n")
    out = tmp_path / "man"
    r = sluice.caption(manifest, out, "--max-tokens", 2, "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    row = read_rows(out)[0]
    assert row["video_frames"] == 4 and row.get("error") is None


def test_parquet_has_video_columns_null_for_images(sluice, mixed, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    r = sluice.caption(mixed, out, "--max-tokens", 2, "--show", 0, "--metrics-addr", "off",
                       "--format", "parquet", "--include-image-bytes")
    assert r.returncode == 3, r.stderr
    table = pq.read_table(out / "part-00000.parquet").to_pylist()
    by_id = {row["id"]: row for row in table}
    assert by_id["a.mp4"]["video_frames"] == 4
    assert abs(by_id["b.webm"]["video_seconds"] - 4.0) < 0.15
    image_id = "c" + sample_images()[0].suffix
    assert by_id[image_id]["video_frames"] is None and by_id[image_id]["video_seconds"] is None
    # An image's bytes are kept; a video's are not (it is read in place).
    assert by_id[image_id]["image_bytes"] == (mixed / image_id).read_bytes()
    assert by_id["a.mp4"]["image_bytes"] is None


def test_a_video_through_llama_server(sluice, clips, llama_prefix, tmp_path):
    with LlamaServer(llama_prefix, tmp_path / "server.log", 1) as server:
        server.wait_ready()
        out = tmp_path / "out"
        r = sluice.run("caption", clips / "mp4", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, "--max-tokens", 4, "--video-frames", 3,
                       "--show", 0, "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        row = read_rows(out)[0]
        assert row.get("error") is None, row
        assert row["video_frames"] == 3
        # The server counted three images' positions and more.
        single = tmp_path / "single"
        (tmp_path / "img").mkdir()
        Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / "img" / "frame.png")
        r = sluice.run("caption", tmp_path / "img", "-o", single, "--engine", "openai", "--endpoint",
                       server.url, "--max-tokens", 4, "--show", 0, "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        assert row["prompt_tokens"] > 3 * (read_rows(single)[0]["prompt_tokens"] - 30)


def test_image_and_video_files_as_inputs(sluice, clips, tmp_path):
    """Files named as inputs (a glob of them), one row each, ids their base
    names; a folder beside them is refused (exit 2) as kinds that mix."""
    d = tmp_path / "files"
    d.mkdir()
    shutil.copy(clips / "colours.mp4", d / "clip.mp4")
    img = sample_images()[0]
    shutil.copy(img, d / ("photo" + img.suffix))
    out = tmp_path / "out"
    r = sluice.run("caption", f"{d}/*", "-o", out, "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--max-tokens", 2, "--show", 0,
                   "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    assert sorted(rows) == ["clip.mp4", "photo" + img.suffix]
    assert rows["clip.mp4"]["video_frames"] == 4
    assert rows["photo" + img.suffix].get("error") is None
    assert "video_frames" not in rows["photo" + img.suffix]
    r = sluice.run("caption", d / "clip.mp4", clips / "mp4", "-o", tmp_path / "mixed",
                   "--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")
    assert r.returncode == 2
    assert "inputs mix kinds" in r.stderr


def test_the_video_example_job_runs_on_the_tiny_model(sluice, clips, tmp_path):
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "video.yaml"
    out = tmp_path / "out"
    r = sluice.run("run", example, clips / "webm", "-o", out, "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--max-tokens", 2, "--show", 0,
                   "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["video_frames"] == 4
    assert max(rows[0]["width"], rows[0]["height"]) <= 384


def test_a_plugin_reads_a_rows_video(sluice, mixed, tmp_path):
    """The host table's row_video (tests/plugins/answers.c sets frames_seen
    from it): a video's frame count as the output says it, nothing for an
    image."""
    plugin = pathlib.Path(sluice.binary).resolve().parent / "tests" / "unit" / \
        "libtest_plugin_answers.so"
    assert plugin.exists(), f"{plugin} not built"
    out = tmp_path / "out"
    r = sluice.caption(mixed, out, "--max-tokens", 2, "--video-frames", 3, "--show", 0,
                       "--metrics-addr", "off", "--stage", f"{plugin}@engine")
    assert r.returncode == 3, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    for vid in ("a.mp4", "b.webm"):
        assert rows[vid]["frames_seen"] == rows[vid]["video_frames"] == 3
    assert "frames_seen" not in rows["c" + sample_images()[0].suffix]


def test_a_build_without_ffmpeg_fails_video_rows_alone(mixed, tmp_path):
    """The CLI built with -DSLUICE_VIDEO=OFF (`make build-novideo`, as the GPU
    payload is): videos are still recognised, each fails its row saying
    why, and the image beside them is captioned. `make test` builds it; a
    build configured without SLUICE_NOVIDEO_BIN skips this test."""
    binary = os.environ.get("SLUICE_NOVIDEO_BIN")
    if not binary:
        pytest.skip("no build without FFmpeg (make build-novideo, then configure with "
                    "-DSLUICE_NOVIDEO_BIN)")
    assert pathlib.Path(binary).exists(), f"{binary} not built: make build-novideo"
    out = tmp_path / "out"
    r = subprocess.run([binary, "caption", str(mixed), "-o", str(out), "--model",
                        str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                        "--max-tokens", "2", "--show", "0", "--metrics-addr", "off"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    image = rows["c" + sample_images()[0].suffix]
    assert image.get("error") is None and image["generated_tokens"] > 0
    for vid in ("a.mp4", "b.webm", "d-broken.mp4"):
        assert rows[vid]["error_stage"] == "decode"
        assert "without FFmpeg" in rows[vid]["error"] and vid in rows[vid]["error"]


# ---- remote videos: read in place by ranged GETs ------------------------------------


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> pathlib.Path:
    """40 s at 320x240, 10 s of each colour, noise so the frames (not the
    index) are the file: ~8 MB, a keyframe every second."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    inputs = []
    for c in COLOURS:
        inputs += ["-f", "lavfi", "-i", f"color=c={c}:s=320x240:r=10:d=10"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex",
                    "[0][1][2][3]concat=n=4:v=1:a=0,noise=alls=20:allf=t+u", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-g", "10", "-sc_threshold", "0", str(path)],
                   check=True, timeout=120)
    return path


@pytest.fixture
def range_server(clips, long_clip, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(long_clip, www / "long.mp4")
    # its first 4 s (~0.85 MB): more than a first ranged read, less than the bound below
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(long_clip), "-t", "4",
                    "-c", "copy", str(www / "mid.mp4")], check=True, timeout=120)
    shutil.copy(clips / "colours.mp4", www / "colours.mp4")
    shutil.copy(clips / "colours.mp4", www / "clip")  # a name that says nothing
    shutil.copy(clips / "colours.webm", www / "colours.webm")
    RangeHandler.log = []
    with LocalServer(functools.partial(RangeHandler, directory=str(www))) as server:
        yield www, server.url


def test_a_video_url_is_read_in_place_under_the_download_bound(sluice, range_server, tmp_path):
    """4 frames of an 8 MB video with --max-download-bytes 4M: captioned
    from the right frames, by ranged GETs only, reading under the bound."""
    www, base = range_server
    size = (www / "long.mp4").stat().st_size
    bound = 4 << 20
    assert size > bound
    bodies = []

    def answer(handler, n, body):
        bodies.append(body)
        completion(handler, "a video")

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "long", "url": f"{base}/long.mp4"}) + "\n")
    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", manifest, "-o", out, "--engine", "openai", "--endpoint",
                       server.url, "--video-frames", 4, "--frame-text", "", "--show", 0,
                       "--metrics-addr", "off", "--max-download-bytes", bound)
        assert r.returncode == 0, r.stderr
        first_run = list(RangeHandler.log)
        # With a bound below what sampling reads, the row fails saying so.
        small = tmp_path / "small"
        r = sluice.run("caption", manifest, "-o", small, "--engine", "openai", "--endpoint",
                       server.url, "--video-frames", 4, "--show", 0, "--metrics-addr", "off",
                       "--max-download-bytes", "1M")
        assert r.returncode == 3, r.stderr
    row = read_rows(out)[0]
    assert row.get("error") is None and row["video_frames"] == 4, row
    assert abs(row["video_seconds"] - 40.0) < 0.5
    frames = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
              for p in sent_parts(bodies[-1])[:4]]
    assert [colour_of(f) for f in frames] == COLOURS
    gets = [e for e in first_run if e[0] == "/long.mp4"]
    assert gets and all(rng and status == 206 for _, rng, status, _ in gets), gets
    read = sum(n for *_, n in gets)
    assert read <= bound and read < size / 2, (read, size)
    err = read_rows(small)[0]["error"]
    assert "--max-download-bytes" in err and f"{base}/long.mp4" in err, err


def test_video_urls_sniffed_refused_ranges_and_missing(sluice, range_server, tmp_path):
    """A URL whose name says nothing is sniffed as a video; a ?query does not
    hide the extension; a server that ignores Range gets the video fetched
    whole (under the bound, as an image is); a 404 fails its row alone."""
    www, base = range_server
    rows_in = [
        {"id": "sniffed", "url": f"{base}/clip"},
        {"id": "query", "url": f"{base}/colours.webm?sig=abc"},
        {"id": "plain", "url": f"{base}/plain/colours.mp4"},
        {"id": "plain-mid", "url": f"{base}/plain/mid.mp4"},
        {"id": "plain-long", "url": f"{base}/plain/long.mp4"},
        {"id": "gone", "url": f"{base}/gone.mp4"},
        {"id": "image", "url": f"{base}/plain/none.jpg"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    out = tmp_path / "out"
    r = sluice.caption(manifest, out, "--max-tokens", 2, "--show", 0, "--metrics-addr", "off",
                       "--max-download-bytes", "2M")
    assert r.returncode == 3, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    for ok in ("sniffed", "query", "plain"):
        assert rows[ok].get("error") is None and rows[ok]["video_frames"] == 4, rows[ok]
    # (-t 4 with -c copy ends at a keyframe past 4 s: 4 or 5 frames)
    assert rows["plain-mid"].get("error") is None and rows["plain-mid"]["video_frames"] >= 4
    assert "limit" in rows["plain-long"]["error"], rows["plain-long"]
    assert "HTTP 404" in rows["gone"]["error"] and f"{base}/gone.mp4" in rows["gone"]["error"]
    log = RangeHandler.log
    # The sniffed one: a small read, then ranged reads of the rest.
    clip = [e for e in log if e[0] == "/clip"]
    assert clip[0][1] == "bytes=0-511" and all(e[2] == 206 for e in clip), clip
    # Range ignored: the ranged try stopped early, then the whole GET stopped at the
    # bound. (What the server wrote includes what the sockets buffered when the
    # client hung up: MBs on loopback, less than the file.)
    plain_long = [e for e in log if e[0] == "/plain/long.mp4"]
    assert [e[1] for e in plain_long] == ["bytes=0-262143", None], plain_long
    assert all(n < (www / "long.mp4").stat().st_size for *_, n in plain_long), plain_long
    # ... and under the bound the whole GET is decoded from memory.
    plain_mid = [e for e in log if e[0] == "/plain/mid.mp4"]
    assert [e[1] for e in plain_mid] == ["bytes=0-262143", None], plain_mid
    assert (www / "mid.mp4").stat().st_size > 262144
    # An image name is not asked for by range.
    assert all(e[1] is None for e in log if e[0] == "/plain/none.jpg")


def test_rows_from_a_folder_of_videos_in_a_bucket(sluice, clips, tmp_path):
    with moto_store() as (env, client):
        client.create_bucket(Bucket="vids")
        client.put_object(Bucket="vids", Key="set/a.mp4", Body=(clips / "colours.mp4").read_bytes())
        client.put_object(Bucket="vids", Key="set/b.webm",
                          Body=(clips / "colours.webm").read_bytes())
        img = sample_images()[0]
        client.put_object(Bucket="vids", Key="set/c" + img.suffix, Body=img.read_bytes())
        proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
        try:
            out = tmp_path / "out"
            r = subprocess.run([str(sluice.binary), "caption", "s3://vids/set", "-o", str(out),
                                "--model", str(TINY / "model.gguf"), "--mmproj",
                                str(TINY / "mmproj.gguf"), "--max-tokens", "2", "--show", "0",
                                "--metrics-addr", "off"],
                               env=dict(env, AWS_ENDPOINT_URL=proxy.url), capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-3000:]
            rows = {row["id"]: row for row in read_rows(out)}
            assert sorted(rows) == ["a.mp4", "b.webm", "c" + img.suffix]
            for v in ("a.mp4", "b.webm"):
                assert rows[v].get("error") is None and rows[v]["video_frames"] == 4, rows[v]
                assert rows[v]["path"] == f"s3://vids/set/{v}"
                gets = proxy.gets(f"/vids/set/{v}")
                assert gets and all(rng for _, _, rng, _, _ in gets), gets
            assert "video_frames" not in rows["c" + img.suffix]
        finally:
            proxy.close()


def test_a_placeholder_puts_a_videos_frames_at_its_marker(sluice, clips, tmp_path):
    sent = []
    with FakeServer(lambda handler, n, body: (sent.append(body), completion(handler, "a video"))) \
            as server:
        r = sluice.run("caption", clips / "mp4", "-o", tmp_path / "out", "--engine", "openai",
                       "--endpoint", server.url, "--prompt", "Watch <image> then answer.",
                       "--image-placeholder", "<image>", "--video-frames", 2, "--show", 0,
                       "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
    parts = sent_parts(sent[-1])
    assert [p.get("text", p["type"]) for p in parts] == \
        ["Watch ", "Frame at 1.0 s:", "image_url", "Frame at 3.0 s:", "image_url", " then answer."]
    frames = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
              for p in parts if p["type"] == "image_url"]
    assert [colour_of(f) for f in frames] == ["green", "white"]


def video_url_frames(part: dict) -> list:
    """The frames of a video_url part, read as vLLM's VideoMediaIO.load_base64
    reads a data:video/jpeg URL: base64 JPEGs joined by commas."""
    assert part["type"] == "video_url"
    head, data = part["video_url"]["url"].split(",", 1)
    assert head == "data:video/jpeg;base64"
    return [base64.b64decode(f, validate=True) for f in data.split(",")]


def test_video_part_video_url_sends_the_frames_as_one_video(sluice, clips, mixed, tmp_path):
    sent = []
    with FakeServer(lambda handler, n, body: (sent.append(body), completion(handler, "a video"))) \
            as server:
        common = ["--engine", "openai", "--endpoint", server.url, "--show", 0,
                  "--metrics-addr", "off"]
        out = tmp_path / "out"
        r = sluice.run("caption", clips / "mp4", "-o", out, "--prompt", "What happens?",
                       "--video-part", "video_url", *common)
        assert r.returncode == 0, r.stderr
        parts = sent_parts(sent[-1])
        # One video part (no frame texts), then the prompt.
        assert [p["type"] for p in parts] == ["video_url", "text"]
        assert parts[1]["text"] == "What happens?"
        assert [colour_of(f) for f in video_url_frames(parts[0])] == COLOURS
        row = read_rows(out)[0]
        assert row["caption"] == "a video" and row["video_frames"] == 4

        # At a placeholder: the one part goes at the marker.
        r = sluice.run("caption", clips / "webm", "-o", tmp_path / "placed", "--prompt",
                       "Watch <image> then answer.", "--image-placeholder", "<image>",
                       "--video-frames", 2, "--video-part", "video_url", *common)
        assert r.returncode == 0, r.stderr
        parts = sent_parts(sent[-1])
        assert [p.get("text", p["type"]) for p in parts] == \
            ["Watch ", "video_url", " then answer."]
        assert [colour_of(f) for f in video_url_frames(parts[1])] == ["green", "white"]

        # Images beside the videos still go as image_url parts; a broken
        # video fails its row alone.
        sent.clear()
        out3 = tmp_path / "mixed"
        r = sluice.run("caption", mixed, "-o", out3, "--video-part", "video_url", *common)
        assert r.returncode == 3, r.stderr  # one failed row
        kinds = sorted(tuple(p["type"] for p in sent_parts(b)) for b in sent)
        assert kinds == [("image_url", "text"), ("video_url", "text"), ("video_url", "text")]
        rows = {row["id"]: row for row in read_rows(out3)}
        assert rows["d-broken.mp4"]["error_stage"] == "decode"

        # The other way over the same output is another job: refused.
        r = sluice.run("caption", clips / "mp4", "-o", out, "--prompt", "What happens?",
                       *common)
        assert r.returncode == 2 and "video_part" in r.stderr, r.stderr


def test_video_part_video_url_refusals(sluice, clips, tmp_path):
    # The llama engine reads frames as images: the option would change nothing.
    r = sluice.run("caption", clips / "mp4", "-o", tmp_path / "a", "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--video-part", "video_url")
    assert r.returncode == 2 and "--engine openai" in r.stderr, r.stderr
    # A text before each frame has no place in one part.
    r = sluice.run("caption", clips / "mp4", "-o", tmp_path / "b", "--engine", "openai",
                   "--endpoint", "http://127.0.0.1:9", "--video-part", "video_url",
                   "--frame-text", "At {time}:")
    assert r.returncode == 2 and "--frame-text" in r.stderr, r.stderr
    r = sluice.run("caption", clips / "mp4", "-o", tmp_path / "c", "--engine", "openai",
                   "--endpoint", "http://127.0.0.1:9", "--video-part", "video")
    assert r.returncode == 2 and "image_url" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["etag", "modified", "ignores"])
def test_a_video_url_replaced_between_its_ranged_reads_fails_its_row(sluice, long_clip, tmp_path,
                                                                    mode):
    """A video URL read by ranges from a server that replaces the file after
    the first read (a job rewriting it): the later reads ask for the first
    answer's ETag (If-Match), or its Last-Modified (If-Unmodified-Since)
    when the server gives no ETag, and the server's 412 fails the row naming
    the URL and saying the file changed; a server that ignores the condition
    is caught by its answer's own ETag. They sent no condition: the two
    versions were read as one file (the row failed as 'Invalid data found',
    naming no cause)."""
    import http.server
    import threading
    from localserver import byte_range
    one = long_clip.read_bytes()
    middle = len(one) // 2
    versions = [one, one[:middle] + bytes(b ^ 0x5A for b in one[middle:])]
    tags = ['"v-one"', '"v-two"']
    stamps = ["Mon, 30 Nov 2026 10:00:00 GMT", "Mon, 30 Nov 2026 10:00:07 GMT"]
    gets = []
    lock = threading.Lock()

    class Changing(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                v = 1 if gets else 0  # replaced once its first read is answered
                gets.append(self.headers.get("Range"))
            data = versions[v]
            cond = (self.headers.get("If-Match") if mode == "etag" else
                    self.headers.get("If-Unmodified-Since") if mode == "modified" else None)
            if cond is not None and cond != (tags if mode == "etag" else stamps)[v]:
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, first, last = byte_range(self.headers.get("Range"), len(data))
            body = data[first:last + 1]
            self.send_response(status)
            if mode == "modified":
                self.send_header("Last-Modified", stamps[v])
            else:
                self.send_header("ETag", tags[v])
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    manifest = tmp_path / "m.jsonl"
    with LocalServer(Changing) as www, FakeServer(lambda h, n, body: completion(h, "a video")) \
            as server:
        url = f"{www.url}/long.mp4"
        manifest.write_text(json.dumps({"id": "long", "url": url}) + "\n")
        r = sluice.run("caption", manifest, "-o", tmp_path / "out", "--engine", "openai",
                       "--endpoint", server.url, "--video-frames", 4, "--show", 0,
                       "--metrics-addr", "off")
    assert len(gets) > 1, gets
    assert r.returncode == 3, r.stderr[-3000:]
    err = read_rows(tmp_path / "out")[0]["error"]
    assert err and url in err and "changed since its first read" in err, err
