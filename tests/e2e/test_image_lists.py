"""Several images a row (docs/inputs.md "Several images a row"): a manifest's
image column may hold a list; the row's images go to the model together,
in order, before the prompt. Fixture images are solid colours, so which
image went where shows in what a server receives. Checked: the parts an HTTP
server receives (order, colours, --image-text), the llama engine's positions
growing with the images, failures naming the row and the image, lists of
URLs, tasks, Parquet output, resume refusing another --image-text, a Lua
stage and a plugin reading the count, and llama-server answering a list
row."""
import base64
import functools
import http.server
import io
import json
import pathlib

import pytest
from PIL import Image

from conftest import TINY, read_rows, wds_shard
from localserver import LocalServer
from openai_helpers import FakeServer, LlamaServer, completion

RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}
QUIET = ("--show", 0, "--metrics-addr", "off")


def colour_of(jpeg: bytes) -> str:
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    px = im.getpixel((im.width // 2, im.height // 2))
    return min(RGB, key=lambda c: sum((a - b) ** 2 for a, b in zip(px, RGB[c])))


@pytest.fixture
def colours(tmp_path) -> pathlib.Path:
    d = tmp_path / "img"
    d.mkdir()
    for name, rgb in RGB.items():
        Image.new("RGB", (64, 48), rgb).save(d / f"{name}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def manifest(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sent_parts(req: dict) -> list:
    user = [m for m in req["messages"] if m["role"] == "user"]
    assert len(user) == 1
    return user[0]["content"]


def image_colours(parts: list) -> list[str]:
    return [colour_of(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))
            for p in parts if p["type"] == "image_url"]


def test_a_list_goes_to_the_server_in_order(sluice, colours, tmp_path):
    m = manifest(colours / "m.jsonl", [
        {"id": "rgb", "images": ["red.png", "green.png", "blue.png"], "prompt": "Which differ?"},
        {"id": "wr", "images": ["white.png", "red.png"], "prompt": "Compare."},
    ])
    bodies = {}

    def answer(handler, n, body):
        bodies[sent_parts(body)[-1]["text"]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", m, "-o", out, "--engine", "openai", "--endpoint", server.url,
                       *QUIET)
        assert r.returncode == 0, r.stderr
        parts = sent_parts(bodies["Which differ?"])
        assert [p["type"] for p in parts] == ["image_url"] * 3 + ["text"]
        assert image_colours(parts) == ["red", "green", "blue"]
        assert image_colours(sent_parts(bodies["Compare."])) == ["white", "red"]
        rows = {row["id"]: row for row in read_rows(out)}
        assert rows["rgb"]["image_count"] == 3 and rows["wr"]["image_count"] == 2
        # The list passes through (the output's only record of the paths).
        assert rows["rgb"]["images"] == ["red.png", "green.png", "blue.png"]
        assert rows["rgb"].get("path") is None
        assert (rows["rgb"]["width"], rows["rgb"]["height"]) == (64, 48)

        # --image-text: a text before each image, {index} its number.
        bodies.clear()
        out2 = tmp_path / "out2"
        r = sluice.run("caption", m, "-o", out2, "--engine", "openai", "--endpoint", server.url,
                       "--image-text", "Image {index}:", *QUIET)
        assert r.returncode == 0, r.stderr
        parts = sent_parts(bodies["Which differ?"])
        assert [p["type"] for p in parts] == ["text", "image_url"] * 3 + ["text"]
        assert [p["text"] for p in parts[0:6:2]] == ["Image 1:", "Image 2:", "Image 3:"]
        assert image_colours(parts) == ["red", "green", "blue"]


def test_a_conversation_column_gives_the_prompt(sluice, colours, tmp_path):
    """--prompt-column naming a conversation (LLaVA's {from, value} turns, or
    chat messages {role, content} with text parts) takes its first human
    turn as the row's prompt, in a JSON array, a JSONL manifest and a
    Parquet list of structs alike; LLaVA's <image> marker places the image
    with --image-placeholder; a conversation without a human turn keeps
    --prompt; the conversation passes through whole."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    llava = [{"id": f"l{i}", "image": f"{c}.png",
              "conversations": [{"from": "system", "value": "ignored"},
                                {"from": "human", "value": f"<image>\nWhich colour, {i}?"},
                                {"from": "gpt", "value": "old answer"},
                                {"from": "human", "value": "a second turn, not sent"}]}
             for i, c in enumerate(["red", "green"])]
    llava.append({"id": "l-none", "image": "blue.png", "conversations": [{"from": "gpt", "value": "x"}]})
    (colours / "mix.json").write_text(json.dumps(llava))
    chat = manifest(colours / "chat.jsonl", [
        {"id": "c0", "image": "white.png", "messages": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Name"},
                                         {"type": "text", "text": "the colour."}]}]},
        {"id": "c1", "image": "red.png", "messages": [{"role": "user", "content": "Plain <image> text?"}]}])
    conv = pa.struct([("from", pa.string()), ("value", pa.string())])
    pq.write_table(pa.table({"image": [str(colours / "blue.png")],
                             "conversations": pa.array([llava[0]["conversations"]], pa.list_(conv))}),
                   colours / "conv.parquet")
    bodies = {}

    def answer(handler, n, body):
        bodies["".join(p["text"] for p in sent_parts(body) if p["type"] == "text")] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        base = ("--engine", "openai", "--endpoint", server.url, "--image-placeholder", "<image>",
                "--prompt", "The job's prompt.", *QUIET)
        r = sluice.run("caption", colours / "mix.json", "-o", tmp_path / "a", "--prompt-column",
                       "conversations", *base)
        assert r.returncode == 0, r.stderr
        for i, c in enumerate(["red", "green"]):
            parts = sent_parts(bodies[f"\nWhich colour, {i}?"])
            assert [p.get("text", p["type"]) for p in parts] == ["image_url", f"\nWhich colour, {i}?"]
            assert image_colours(parts) == [c]
        assert image_colours(sent_parts(bodies["The job's prompt."])) == ["blue"]
        rows = {row["id"]: row for row in read_rows(tmp_path / "a")}
        assert rows["l0"]["conversations"] == llava[0]["conversations"]

        bodies.clear()
        r = sluice.run("caption", chat, "-o", tmp_path / "b", "--prompt-column", "messages", *base)
        assert r.returncode == 0, r.stderr
        assert image_colours(sent_parts(bodies["Name\nthe colour."])) == ["white"]
        assert [p.get("text", p["type"]) for p in sent_parts(bodies["Plain  text?"])] == \
            ["Plain ", "image_url", " text?"]

        bodies.clear()
        r = sluice.run("caption", colours / "conv.parquet", "-o", tmp_path / "c", "--prompt-column",
                       "conversations", *base)
        assert r.returncode == 0, r.stderr
        assert list(bodies) == ["\nWhich colour, 0?"]
        assert image_colours(sent_parts(bodies["\nWhich colour, 0?"])) == ["blue"]

        # The same rows in an Arrow file (a Hugging Face dataset saved to disk).
        import pyarrow.ipc as ipc
        table = pq.read_table(colours / "conv.parquet")
        with ipc.new_stream(str(colours / "conv.arrow"), table.schema) as w:
            w.write_table(table)
        bodies.clear()
        r = sluice.run("caption", colours / "conv.arrow", "-o", tmp_path / "d", "--prompt-column",
                       "conversations", *base)
        assert r.returncode == 0, r.stderr
        assert list(bodies) == ["\nWhich colour, 0?"]
        assert image_colours(sent_parts(bodies["\nWhich colour, 0?"])) == ["blue"]


def test_a_placeholder_puts_the_images_inside_the_prompt(sluice, colours, tmp_path):
    m = manifest(colours / "m.jsonl", [
        {"id": "pair", "images": ["red.png", "green.png"], "prompt": "Is <image> darker than <image>?"},
        {"id": "one", "image": "blue.png", "prompt": "What colour is <image> here?"},
        {"id": "before", "images": ["white.png", "red.png"], "prompt": "No markers."},
        {"id": "short", "images": ["white.png", "red.png"], "prompt": "Only <image>."},
    ])
    bodies = {}

    def answer(handler, n, body):
        texts = [p["text"] for p in sent_parts(body) if p["type"] == "text"]
        bodies[texts[0]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", m, "-o", out, "--engine", "openai", "--endpoint", server.url,
                       "--image-placeholder", "<image>", "--system", "Be brief.", *QUIET)
        assert r.returncode == 3, r.stderr
        parts = sent_parts(bodies["Is "])
        assert [p.get("text", p["type"]) for p in parts] == \
            ["Is ", "image_url", " darker than ", "image_url", "?"]
        assert image_colours(parts) == ["red", "green"]
        assert bodies["Is "]["messages"][0] == {"role": "system", "content": "Be brief."}
        parts = sent_parts(bodies["What colour is "])
        assert [p.get("text", p["type"]) for p in parts] == \
            ["What colour is ", "image_url", " here?"]
        assert image_colours(parts) == ["blue"]
        # No marker: the images before the prompt, as without the option.
        parts = sent_parts(bodies["No markers."])
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        rows = {row["id"]: row for row in read_rows(out)}
        assert "2 images" in rows["short"]["error"] and "1 '<image>' markers" in rows["short"]["error"]
        assert "short" not in {k for k in bodies}  # never sent

    # Tasks share their images before each prompt: refused with a placeholder.
    r = sluice.run("caption", m, "-o", tmp_path / "t", "--engine", "openai", "--endpoint",
                   "http://127.0.0.1:9", "--image-placeholder", "<image>", "--task", "a=<image>?")
    assert r.returncode == 2 and "--image-placeholder" in r.stderr

    # The llama engine: the same images and text in another order, the same positions.
    m2 = manifest(colours / "m2.jsonl", [
        {"id": "inside", "images": ["red.png", "green.png"], "prompt": "Is <image> darker than <image>?"},
    ])
    m3 = manifest(colours / "m3.jsonl", [
        {"id": "before", "images": ["red.png", "green.png"], "prompt": "Is  darker than ?"},
    ])
    r = sluice.caption(m2, tmp_path / "l2", "--max-tokens", 2, "--image-placeholder", "<image>",
                       *QUIET)
    assert r.returncode == 0, r.stderr
    r = sluice.caption(m3, tmp_path / "l3", "--max-tokens", 2, *QUIET)
    assert r.returncode == 0, r.stderr
    inside, before = read_rows(tmp_path / "l2")[0], read_rows(tmp_path / "l3")[0]
    assert inside["error"] is None and inside["image_count"] == 2
    assert abs(inside["prompt_tokens"] - before["prompt_tokens"]) <= 4  # tokenizer seams


def test_lists_with_the_llama_engine_and_their_failures(sluice, colours, tmp_path):
    (colours / "clip.mp4").write_bytes((pathlib.Path(__file__).parent / "conftest.py").read_bytes())
    rows_in = [
        {"id": "one", "image": "red.png", "prompt": "Describe."},
        {"id": "list1", "images": ["red.png"], "prompt": "Describe."},
        {"id": "list2", "images": ["red.png", "green.png"], "prompt": "Describe."},
        {"id": "list4", "images": ["red.png", "green.png", "blue.png", "white.png"],
         "prompt": "Describe.", "label": "four"},
        {"id": "broken", "images": ["red.png", "broken.jpg"]},
        {"id": "middle", "images": ["red.png", "broken.jpg", "green.png", "blue.png"]},
        {"id": "missing", "images": ["red.png", "green.png", "nope.png"]},
        {"id": "empty", "images": []},
        {"id": "long", "images": ["red.png"] * 17},
        {"id": "number", "images": ["red.png", 7]},
    ]
    m = manifest(colours / "m.jsonl", rows_in)
    out = tmp_path / "out"
    r = sluice.caption(m, out, "--max-tokens", 4, "--parallel", 2, *QUIET)
    assert r.returncode == 3, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    assert sorted(rows) == sorted(x["id"] for x in rows_in)
    for ok in ("one", "list1", "list2", "list4"):
        assert rows[ok].get("error") is None, rows[ok]
        assert rows[ok]["generated_tokens"] > 0
    assert "image_count" not in rows["one"]
    assert [rows[k]["image_count"] for k in ("list1", "list2", "list4")] == [1, 2, 4]
    assert rows["list4"]["label"] == "four"
    # A list of one is the same request as the row of one image.
    assert rows["list1"]["prompt_tokens"] == rows["one"]["prompt_tokens"]
    assert rows["list1"]["caption"] == rows["one"]["caption"]
    # Each further image adds the same positions: an image's, not a line's.
    per_image = rows["list2"]["prompt_tokens"] - rows["list1"]["prompt_tokens"]
    assert per_image > 10
    assert rows["list4"]["prompt_tokens"] == rows["list1"]["prompt_tokens"] + 3 * per_image

    broken = rows["broken"]
    assert broken["error_stage"] == "decode"
    assert "image 2 of 2" in broken["error"] and "broken.jpg" in broken["error"]
    assert broken["image_count"] == 2
    # The list's length, not the image it failed at.
    assert "image 2 of 4" in rows["middle"]["error"] and rows["middle"]["image_count"] == 4
    assert "image 3 of 3" in rows["missing"]["error"] and "nope.png" in rows["missing"]["error"]
    assert "empty" in rows["empty"]["error"] and rows["empty"]["error_stage"] == "read"
    assert "17 images" in rows["long"]["error"] and "16" in rows["long"]["error"]
    assert "image 2 of 2 is not a string" in rows["number"]["error"]

    # --image-text adds its text's positions per image; another text over the
    # same output is another job: refused.
    out2 = tmp_path / "out2"
    r = sluice.caption(m, out2, "--max-tokens", 4, "--image-text", "Picture number {index}:",
                       *QUIET)
    assert r.returncode == 3, r.stderr
    labelled = {row["id"]: row for row in read_rows(out2)}
    assert labelled["list2"]["prompt_tokens"] > rows["list2"]["prompt_tokens"]
    assert labelled["one"]["prompt_tokens"] == rows["one"]["prompt_tokens"]
    r = sluice.caption(m, out2, "--max-tokens", 4, "--image-text", "Image {index}:", *QUIET)
    assert r.returncode == 2
    assert "image_text" in r.stderr


def test_a_video_in_a_list_fails_its_row(sluice, colours, tmp_path):
    # Bytes that say MP4 (an ftyp box) under a name that says PNG.
    (colours / "clip.png").write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" +
                                       b"\x00" * 64)
    m = manifest(colours / "m.jsonl", [{"id": "v", "images": ["red.png", "clip.png"]}])
    out = tmp_path / "out"
    r = sluice.caption(m, out, "--max-tokens", 2, *QUIET)
    assert r.returncode == 3, r.stderr
    row = read_rows(out)[0]
    assert "image 2 of 2" in row["error"] and "video" in row["error"]


def test_lists_of_urls_tasks_and_parquet(sluice, colours, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(colours))
    with LocalServer(handler) as server:
        m = manifest(tmp_path / "urls.jsonl", [
            {"id": "u", "images": [f"{server.url}/red.png", str(colours / "green.png")]},
            {"id": "gone", "images": [f"{server.url}/red.png", f"{server.url}/gone.png"]},
        ])
        out = tmp_path / "out"
        r = sluice.caption(m, out, "--max-tokens", 3, "--format", "parquet",
                           "--task", "a=Describe.", "--task", "b=Count them.", *QUIET)
        assert r.returncode == 3, r.stderr
    table = {row["id"]: row for row in pq.read_table(out / "part-00000.parquet").to_pylist()}
    assert table["u"]["image_count"] == 2 and table["u"]["error"] is None
    assert table["u"]["a_generated_tokens"] > 0 and table["u"]["b_generated_tokens"] > 0
    assert table["gone"]["image_count"] == 2
    assert "image 2 of 2" in table["gone"]["error"] and "404" in table["gone"]["error"]

    # A folder's rows (one image each) have a null count.
    out2 = tmp_path / "folder"
    r = sluice.caption(colours, out2, "--max-tokens", 2, "--format", "parquet",
                       "--exclude", "broken.jpg", "--exclude", "*.jsonl", *QUIET)
    assert r.returncode == 0, r.stderr
    counts = pq.read_table(out2 / "part-00000.parquet").column("image_count").to_pylist()
    assert counts == [None] * 4


def test_parquet_lists_of_image_structs_and_of_paths(sluice, colours, tmp_path):
    """A Hugging Face Sequence(Image()) column (list<struct<bytes, path>>, as
    pyarrow writes it) and a list<string> of paths: each row's images reach
    the server in order; other lists pass through; bad lists fail alone."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    png = {c: (colours / f"{c}.png").read_bytes() for c in RGB}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    structs = tmp_path / "structs.parquet"
    pq.write_table(pa.table({
        "images": pa.array([
            [{"bytes": png["blue"], "path": None}, {"bytes": png["red"], "path": None}],
            # no bytes: the path beside the file is read
            [{"bytes": None, "path": str(colours / "green.png")}],
            [],
            None,
            [{"bytes": png["white"], "path": None}, {"bytes": b"not an image", "path": None}],
        ], type=pa.list_(image)),
        "tags": pa.array([["b", "r"], ["g"], [], None, ["w", "x"]]),
        "prompt": ["First?", "Second?", "Third?", "Fourth?", "Fifth?"],
    }), structs, row_group_size=2)
    paths = tmp_path / "paths.parquet"
    pq.write_table(pa.table({
        "images": pa.array([[str(colours / "white.png"), str(colours / "green.png"),
                             str(colours / "red.png")]]),
        "prompt": ["Sixth?"],
    }), paths)
    bodies = {}

    def answer(handler, n, body):
        bodies[sent_parts(body)[-1]["text"]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        for src, name in ((structs, "s"), (paths, "p")):
            out = tmp_path / name
            r = sluice.run("caption", src, "-o", out, "--engine", "openai", "--endpoint",
                           server.url, *QUIET)
            assert r.returncode == (3 if name == "s" else 0), r.stderr
    assert image_colours(sent_parts(bodies["First?"])) == ["blue", "red"]
    assert image_colours(sent_parts(bodies["Second?"])) == ["green"]
    assert image_colours(sent_parts(bodies["Sixth?"])) == ["white", "green", "red"]
    assert set(bodies) == {"First?", "Second?", "Sixth?"}
    rows = {row["id"]: row for row in read_rows(tmp_path / "s")}
    assert rows["structs.parquet:0"]["image_count"] == 2
    assert rows["structs.parquet:0"]["tags"] == ["b", "r"]
    assert rows["structs.parquet:1"]["image_count"] == 1
    for bad in ("structs.parquet:2", "structs.parquet:3"):
        assert rows[bad]["error_stage"] == "read" and "structs.parquet" in rows[bad]["error"]
    fifth = rows["structs.parquet:4"]
    assert fifth["error_stage"] == "decode" and "image 2 of 2" in fifth["error"]
    sixth = read_rows(tmp_path / "p")[0]
    assert sixth["image_count"] == 3
    # A list of paths passes through (as a manifest's does); image structs do not.
    assert sixth["images"] == [str(colours / f"{c}.png") for c in ("white", "green", "red")]
    assert "images" not in rows["structs.parquet:0"]


def test_data_urls_in_a_manifest(sluice, colours, tmp_path):
    """An image column holding data:image/...;base64 URLs (alone or in a
    list): the bytes are the image, no path; bad base64, a data URL that is
    not base64 and one past --max-item-bytes fail their rows alone, the
    message never quoting the whole URL."""
    import base64
    url = {c: "data:image/png;base64," + base64.b64encode((colours / f"{c}.png").read_bytes()).decode()
           for c in RGB}
    rows = [
        {"image": url["blue"], "prompt": "A?"},
        {"images": [url["red"], str(colours / "green.png"), url["white"]], "prompt": "B?"},
        {"image": "data:image/png;base64,@@@@", "prompt": "C?"},
        {"image": "data:text/plain,hello", "prompt": "D?"},
        {"image": "data:image/png;base64," + base64.b64encode(b"x" * 1200000).decode(), "prompt": "E?"},
    ]
    m = manifest(tmp_path / "m.jsonl", rows)
    bodies = {}

    def answer(handler, n, body):
        bodies[sent_parts(body)[-1]["text"]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        r = sluice.run("caption", m, "-o", tmp_path / "out", "--engine", "openai", "--endpoint", server.url,
                       "--max-item-bytes", "1M", "--max-line-bytes", "4M", *QUIET)
    assert r.returncode == 3, r.stderr
    assert image_colours(sent_parts(bodies["A?"])) == ["blue"]
    assert image_colours(sent_parts(bodies["B?"])) == ["red", "green", "white"]
    assert set(bodies) == {"A?", "B?"}
    out = {row["id"]: row for row in read_rows(tmp_path / "out")}
    assert out["m.jsonl:1"]["path"] is None and out["m.jsonl:1"]["error"] is None
    assert "bad character" in out["m.jsonl:3"]["error"]
    assert "must be base64" in out["m.jsonl:4"]["error"]
    assert "1200000 bytes, over the limit of 1048576" in out["m.jsonl:5"]["error"]
    assert all(len(row["error"] or "") < 1000 for row in out.values())
    # Without --max-line-bytes that line (1.6 MB of base64) is past the 1 MiB default.
    with FakeServer(answer) as server:
        r = sluice.run("caption", m, "-o", tmp_path / "out2", "--engine", "openai", "--endpoint", server.url,
                       *QUIET)
    assert r.returncode == 3, r.stderr
    out = {row["id"]: row for row in read_rows(tmp_path / "out2")}
    assert "longer than the limit of 1048576 bytes" in out["m.jsonl:5"]["error"]


def test_parquet_image_bytes_without_the_struct(sluice, colours, tmp_path):
    """Image bytes in a plain binary column (as pandas or Spark leave them,
    no Hugging Face struct around): found as `image` by default or named
    with --image-column, also as a list<binary> and as two columns; a null
    cell fails its row alone, naming the column."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    png = {c: (colours / f"{c}.png").read_bytes() for c in RGB}
    files = {
        "plain": (pa.table({"image": pa.array([png["blue"], None, png["red"]], pa.binary()),
                            "prompt": ["A?", "B?", "C?"]}), []),
        "named": (pa.table({"jpg": pa.array([png["green"]], pa.binary()), "prompt": ["D?"]}),
                  ["--image-column", "jpg"]),
        "list": (pa.table({"frames": pa.array([[png["white"], png["red"], png["blue"]]], pa.list_(pa.binary())),
                           "prompt": ["E?"]}), ["--image-column", "frames"]),
        "pair": (pa.table({"before": pa.array([png["red"]], pa.binary()),
                           "after": pa.array([png["green"]], pa.binary()), "prompt": ["F?"]}),
                 ["--image-column", "before,after"]),
    }
    bodies = {}

    def answer(handler, n, body):
        bodies[sent_parts(body)[-1]["text"]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        for name, (table, extra) in files.items():
            pq.write_table(table, tmp_path / f"{name}.parquet")
            r = sluice.run("caption", tmp_path / f"{name}.parquet", "-o", tmp_path / f"out-{name}", "--engine",
                           "openai", "--endpoint", server.url, *QUIET, *extra)
            assert r.returncode == (3 if name == "plain" else 0), (name, r.stderr)
        # A binary column that is not named and is not `image` is no image column.
        pq.write_table(pa.table({"blob": pa.array([png["blue"]], pa.binary())}), tmp_path / "other.parquet")
        r = sluice.run("caption", tmp_path / "other.parquet", "-o", tmp_path / "out-other", "--engine", "openai",
                       "--endpoint", server.url, *QUIET)
        assert r.returncode == 3 and "a binary column 'image' (image bytes)" in r.stderr, r.stderr
    assert image_colours(sent_parts(bodies["A?"])) == ["blue"]
    assert image_colours(sent_parts(bodies["C?"])) == ["red"]
    assert image_colours(sent_parts(bodies["D?"])) == ["green"]
    assert image_colours(sent_parts(bodies["E?"])) == ["white", "red", "blue"]
    assert image_colours(sent_parts(bodies["F?"])) == ["red", "green"]
    assert "B?" not in bodies
    failed = {row["id"]: row for row in read_rows(tmp_path / "out-plain")}["plain.parquet:1"]
    assert failed["error_stage"] == "read" and "plain.parquet row 1" in failed["error"], failed
    assert "'image'" in failed["error"]


def test_several_image_columns_make_a_list(sluice, colours, tmp_path):
    """--image-column before,after: an image-editing dataset's two columns,
    from JSONL, CSV and Parquet (image structs), are one row's images in the
    order named; a row missing one fails naming the column."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    jl = manifest(colours / "m.jsonl", [
        {"id": "j", "before": "red.png", "after": "green.png", "prompt": "J?"},
        {"id": "j-missing", "before": "red.png", "prompt": "never sent"},
    ])
    (colours / "m.csv").write_text("id,before,after,prompt\nc,blue.png,white.png,C?\n"
                                   "c-empty,blue.png,,never sent\n")
    png = {c: (colours / f"{c}.png").read_bytes() for c in RGB}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "before": pa.array([{"bytes": png["white"], "path": None}], image),
        "after": pa.array([{"bytes": png["blue"], "path": None}], image),
        "prompt": ["P?"]}), colours / "m.parquet")
    bodies = {}

    def answer(handler, n, body):
        bodies[sent_parts(body)[-1]["text"]] = body
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        for src, code in ((jl, 3), (colours / "m.csv", 3), (colours / "m.parquet", 0)):
            out = tmp_path / src.suffix[1:]
            r = sluice.run("caption", src, "-o", out, "--engine", "openai", "--endpoint",
                           server.url, "--image-column", "before,after", *QUIET)
            assert r.returncode == code, r.stderr
    assert image_colours(sent_parts(bodies["J?"])) == ["red", "green"]
    assert image_colours(sent_parts(bodies["C?"])) == ["blue", "white"]
    assert image_colours(sent_parts(bodies["P?"])) == ["white", "blue"]
    assert "never sent" not in bodies
    rows = {row["id"]: row for row in read_rows(tmp_path / "jsonl")}
    assert rows["j"]["image_count"] == 2
    assert (rows["j"]["before"], rows["j"]["after"]) == ("red.png", "green.png")  # kept
    assert "column 'after'" in rows["j-missing"]["error"]
    assert rows["j-missing"]["error_stage"] == "read"
    rows = {row["id"]: row for row in read_rows(tmp_path / "csv")}
    assert "column 'after'" in rows["c-empty"]["error"]
    r = sluice.run("caption", jl, "-o", tmp_path / "bad", "--engine", "openai", "--endpoint",
                   "http://127.0.0.1:9", "--image-column", "before,,after")
    assert r.returncode == 2 and "empty column name" in r.stderr


def test_webdataset_members_named_as_image_columns(sluice, colours, tmp_path):
    """A shard's samples with several image members: --image-column
    0.png,1.png makes them a list in that order; --image-column 1.png picks
    that member over the sample's first image; a sample missing a named
    member fails naming it."""
    png = {c: (colours / f"{c}.png").read_bytes() for c in RGB}
    shard = tmp_path / "pairs.tar"
    shard.write_bytes(wds_shard([
        ("a.0.png", png["green"]), ("a.1.png", png["red"]),
        ("b.jpg", (colours / "broken.jpg").read_bytes()), ("b.0.png", png["white"]),
        ("b.1.png", png["blue"]),
        ("c.0.png", png["red"]),
    ]))
    sent = []

    def answer(handler, n, body):
        sent.append(tuple(image_colours(sent_parts(body))))
        completion(handler, "an answer")

    with FakeServer(answer) as server:
        out = tmp_path / "list"
        r = sluice.run("caption", shard, "-o", out, "--engine", "openai", "--endpoint",
                       server.url, "--image-column", "0.png,1.png", *QUIET)
        assert r.returncode == 3, r.stderr
        # b's first image (a broken .jpg) is not one of the named: not read
        assert sorted(sent) == [("green", "red"), ("white", "blue")]
        rows = {row["id"]: row for row in read_rows(out)}
        assert rows["pairs.tar/a"]["image_count"] == 2
        assert "no member '1.png'" in rows["pairs.tar/c"]["error"]

        sent.clear()
        out = tmp_path / "one"
        r = sluice.run("caption", shard, "-o", out, "--engine", "openai", "--endpoint",
                       server.url, "--image-column", "1.png", *QUIET)
        assert r.returncode == 3, r.stderr
        assert sorted(sent) == [("blue",), ("red",)]


def test_the_edits_example_runs_on_the_tiny_model(sluice, colours, tmp_path):
    """examples/edits.yaml on a local Parquet with the dataset's two image
    columns: each row's pair placed at the prompt's markers."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    png = {c: (colours / f"{c}.png").read_bytes() for c in RGB}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({
        "original_image": pa.array([{"bytes": png["red"], "path": None},
                                    {"bytes": png["blue"], "path": None}], image),
        "edited_image": pa.array([{"bytes": png["green"], "path": None},
                                  {"bytes": png["white"], "path": None}], image),
        "edit_prompt": ["make it green", "make it white"]}), pairs)
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "edits.yaml"
    out = tmp_path / "out"
    r = sluice.run("run", example, pairs, "-o", out, "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--max-tokens", 2, *QUIET)
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert sorted(row["edit_prompt"] for row in rows) == ["make it green", "make it white"]
    assert all(row["image_count"] == 2 and row["error"] is None for row in rows)


def test_a_lua_stage_reads_the_count(sluice, colours, tmp_path):
    script = tmp_path / "count.lua"
    script.write_text("function process(row)\n"
                      "  row.columns.n_images = row.image.count\n"
                      "  return row\n"
                      "end\n")
    m = manifest(colours / "m.jsonl", [
        {"id": "three", "images": ["red.png", "green.png", "blue.png"]},
        {"id": "single", "image": "white.png"},
    ])
    out = tmp_path / "out"
    r = sluice.caption(m, out, "--max-tokens", 2, "--stage", f"{script}@decode", *QUIET)
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    assert rows["three"]["n_images"] == 3 and rows["single"]["n_images"] == 1


def test_a_plugin_reads_the_count(sluice, colours, tmp_path):
    """The host table's row_image_count (tests/plugins/answers.c sets
    images_seen from it): a list's length, nothing for a single image."""
    plugin = pathlib.Path(sluice.binary).resolve().parent / "tests" / "unit" / \
        "libtest_plugin_answers.so"
    assert plugin.exists(), f"{plugin} not built"
    m = manifest(colours / "m.jsonl", [
        {"id": "two", "images": ["red.png", "green.png"]},
        {"id": "single", "image": "white.png"},
    ])
    out = tmp_path / "out"
    r = sluice.caption(m, out, "--max-tokens", 2, "--stage", f"{plugin}@engine", *QUIET)
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    assert rows["two"]["images_seen"] == rows["two"]["image_count"] == 2
    assert "images_seen" not in rows["single"]


def test_a_list_through_llama_server(sluice, colours, llama_prefix, tmp_path):
    m = manifest(colours / "m.jsonl", [
        {"id": "two", "images": ["red.png", "green.png"], "prompt": "Describe."},
        {"id": "one", "image": "red.png", "prompt": "Describe."},
    ])
    with LlamaServer(llama_prefix, tmp_path / "server.log", 1) as server:
        server.wait_ready()
        out = tmp_path / "out"
        r = sluice.run("caption", m, "-o", out, "--engine", "openai", "--endpoint", server.url,
                       "--max-tokens", 4, *QUIET)
        assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in read_rows(out)}
    assert rows["two"].get("error") is None and rows["two"]["image_count"] == 2
    # The server counted a second image's positions.
    assert rows["two"]["prompt_tokens"] > rows["one"]["prompt_tokens"] + 10


def test_a_bad_path_in_a_list_is_named_alike_in_parquet_and_arrow(sluice, colours, tmp_path):
    """A list<string> of paths whose second path cannot be read (a scheme
    sluice does not fetch): Parquet's failed row named the list's column and
    'image 2 of 2'; Arrow's named only the path, so a row of several
    images could not tell which. Both now say it alike, after the file."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow.ipc as ipc
    first = sorted(p.name for p in colours.iterdir())[0]
    table = pa.table({"images": pa.array([[first, "ftp://h/x.jpg"]], pa.list_(pa.string()))})
    pq.write_table(table, colours / "l.parquet")
    with ipc.new_file(str(colours / "l.arrow"), table.schema) as w:
        w.write_table(table)
    said = {}
    for name in ("l.parquet", "l.arrow"):
        r = sluice.run("caption", colours / name, "-o", tmp_path / name, "--image-column",
                       "images", "--dry-run")
        assert r.returncode == 3, r.stderr
        [row] = read_rows(tmp_path / name)
        assert row["error"].startswith(f"{colours / name} row 0, column 'images': image 2 of 2: "
                                       "'ftp://h/x.jpg': URL scheme 'ftp' is not supported"), row
        said[name] = row["error"].split(": ", 1)[1]
    assert said["l.parquet"] == said["l.arrow"], said
