"""Qwen2.5-VL's architecture (models/tiny-qwen: a qwen2vl text model with
M-RoPE and Qwen2.5-VL's own vision tower, random weights): an image gives
rows x cols tokens but only max(rows, cols) positions, so the engine must
count KV cells, not positions. Greedy answers equal llama-mtmd-cli's,
and do not depend on how rows are scheduled (one at a time, together,
encoded ahead, with or without the image and prefix caches, as tasks
sharing one encode); --image-max-tokens bounds an image's tokens."""
import pathlib

import pytest

from conftest import (LOSSLESS, REPO, SAMPLES, assert_llama_mtmd_cli_agrees, lossless_inputs,
                      read_rows, sample_images)

QWEN = REPO / "models" / "tiny-qwen"
PROMPT = "Describe this image in one sentence."


def caption(sluice, src, out, *extra):
    return sluice.run("caption", src, "-o", out, "--model", QWEN / "model.gguf",
                      "--mmproj", QWEN / "mmproj.gguf", "--metrics-addr", "off", "--show", 0,
                      *extra)


def image_tokens(edge: int) -> int:
    """Qwen2.5-VL's tokens for an edge x edge image within the default
    limits: the edge rounded to 28 px (14 px patches, 2 x 2 merged)."""
    side = round(edge / 28)
    return side * side


@pytest.fixture(scope="module")
def one_at_a_time(sluice, tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen-serial")
    r = caption(sluice, SAMPLES, out, "--max-tokens", 12, "--parallel", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    return {row["id"]: row for row in read_rows(out)}


def test_every_image_is_answered_and_counts_its_tokens(one_at_a_time):
    # Before the engine counted cells, every image over 256 tokens failed
    # ("failed to find a memory slot"): the sequence was sized by positions.
    assert len(one_at_a_time) == len(sample_images())
    for row in one_at_a_time.values():
        assert row["error"] is None, row
        assert row["caption"].strip(), row
        # a 512 px image (--max-image-edge's default) is 18 x 18 = 324
        # tokens in 18 positions; the prompt counts its tokens
        least = (row["width"] // 28) * (row["height"] // 28)
        assert row["prompt_tokens"] > least + 10, row


@pytest.mark.parametrize("args", [
    ("--parallel", 4),
    ("--parallel", 3, "--encode-ahead", 3),
    ("--parallel", 3, "--encoders", 3),  # encodes ahead, in three vision contexts
    ("--parallel", 4, "--image-cache", 0, "--prefix-cache", "off"),
])
def test_answers_do_not_depend_on_scheduling(sluice, one_at_a_time, tmp_path, args):
    r = caption(sluice, SAMPLES, tmp_path / "out", "--max-tokens", 12, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["id"]: row for row in read_rows(tmp_path / "out")}
    assert set(rows) == set(one_at_a_time)
    for k, row in rows.items():
        assert row["caption"] == one_at_a_time[k]["caption"], (k, args)
        assert row["prompt_tokens"] == one_at_a_time[k]["prompt_tokens"], (k, args)


def test_tasks_share_the_image_and_answer_as_alone(sluice, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_images()[:3]:
        (src / p.name).symlink_to(p)
    tasks = {"short": PROMPT, "colours": "List the main colours."}
    alone = {}
    for name, prompt in tasks.items():
        r = caption(sluice, src, tmp_path / name, "--prompt", prompt, "--max-tokens", 8,
                    "--parallel", 1)
        assert r.returncode == 0, r.stderr[-3000:]
        alone[name] = {row["id"]: row for row in read_rows(tmp_path / name)}
    args = []
    for name, prompt in tasks.items():
        args += ["--task", f"{name}={prompt}"]
    r = caption(sluice, src, tmp_path / "both", *args, "--max-tokens", 8, "--parallel", 4,
                "--rows-per-task")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "both")
    assert len(rows) == 3 * len(tasks)
    shared = 0
    for row in rows:
        want = alone[row["task"]][row["id"]]
        assert row["caption"] == want["caption"], row
        assert row["prompt_tokens"] == want["prompt_tokens"], row
        # a task that copied its sibling's image has those cells cached: the
        # image's tokens (and the text before it), not its (fewer) positions
        least = (row["width"] // 28) * (row["height"] // 28)
        if row["cached_tokens"] > least:
            shared += 1
        else:  # the shared prompt head alone (the template's system message and
            # the user turn's first tokens: 25 positions), not the image's
            assert row["cached_tokens"] < 40, row
    assert shared >= 3


def test_image_max_tokens_bounds_an_image(sluice, tmp_path):
    r = caption(sluice, SAMPLES, tmp_path / "big", "--max-tokens", 2, "--parallel", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    r = caption(sluice, SAMPLES, tmp_path / "small", "--max-tokens", 2, "--parallel", 2,
                "--image-max-tokens", 64)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "big")
    big = {row["id"]: row["prompt_tokens"] for row in rows}
    small = {row["id"]: row["prompt_tokens"] for row in read_rows(tmp_path / "small")}
    square = next(row for row in rows if row["width"] == row["height"] == 512)
    text = square["prompt_tokens"] - image_tokens(512)  # the prompt's own tokens
    assert 10 < text < 60, square
    for k in big:
        assert text + 8 <= small[k] <= text + 64, (k, small[k])
        if big[k] > text + 64:
            assert small[k] < big[k], k
    r = caption(sluice, SAMPLES, tmp_path / "bad", "--image-max-tokens", -1)
    assert r.returncode == 2 and "--image-max-tokens" in r.stderr, r.stderr[-2000:]
    # other image sizes are another job: resume refuses the folder
    r = caption(sluice, SAMPLES, tmp_path / "small", "--max-tokens", 2, "--parallel", 2,
                "--image-max-tokens", 100)
    assert r.returncode == 2 and "image_tokens" in r.stderr, r.stderr[-2000:]


def test_images_larger_than_their_positions_fit(sluice, tmp_path):
    # 800 tokens an image in 29 positions: a sequence sized by positions
    # (as the engine once did) had room for its positions, not its tokens,
    # and the image failed to decode ("failed to find a memory slot").
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_images()[:3]:
        (src / p.name).symlink_to(p)
    r = caption(sluice, src, tmp_path / "out", "--max-tokens", 4, "--parallel", 2,
                "--image-min-tokens", 800)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None, row
        assert row["prompt_tokens"] > 800, row


def test_greedy_output_matches_llama_mtmd_cli(sluice, llama_prefix, tmp_path):
    # The template's Jinja writes "You are a helpful assistant." as the system
    # message where a prompt has none; llama-mtmd-cli --jinja runs that Jinja
    # (llama.cpp's own engine), sluice takes the literal out of the template.
    src = lossless_inputs(tmp_path)
    limit = ("--image-max-tokens", "100")
    r = caption(sluice, src, tmp_path / "out", "--max-image-edge", 0, "--max-tokens", 24,
                "--parallel", 1, *limit)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = {row["id"]: row["caption"] for row in read_rows(tmp_path / "out")}
    for name in LOSSLESS:
        base = pathlib.Path(name).name
        assert_llama_mtmd_cli_agrees(llama_prefix, QWEN, src / base, ours[base], PROMPT, 24, *limit,
                                     "--jinja")


def test_the_template_system_message_is_the_default(sluice, llama_prefix, tmp_path):
    src = lossless_inputs(tmp_path)
    common = ("--max-image-edge", 0, "--max-tokens", 24, "--parallel", 1,
              "--image-max-tokens", 100)
    runs = {"default": (), "given": ("--system", "You are a helpful assistant."),
            "chatml": ("--chat-template", "chatml")}
    rows = {}
    for name, extra in runs.items():
        r = caption(sluice, src, tmp_path / name, *common, *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        rows[name] = {row["id"]: row for row in read_rows(tmp_path / name)}
    base = pathlib.Path(LOSSLESS[0]).name
    # the same prompt as giving the template's message by hand
    for k, row in rows["default"].items():
        assert row["prompt_tokens"] == rows["given"][k]["prompt_tokens"], k
        assert row["caption"] == rows["given"][k]["caption"], k
        # chatml by name has no text to take a message from: none is added
        assert row["prompt_tokens"] > rows["chatml"][k]["prompt_tokens"] + 5, k
    # and without it, what llama.cpp's template engine renders without Jinja
    assert_llama_mtmd_cli_agrees(llama_prefix, QWEN, src / base, rows["chatml"][base]["caption"],
                                 PROMPT, 24, "--image-max-tokens", "100", "--no-jinja")


def test_a_resume_keeps_the_template_system_message_its_rows_had(sluice, tmp_path):
    """The message the template adds is recorded beside the resume
    fingerprint (it is known once the model loads). A folder an earlier
    sluice wrote (no record: it sent no message) goes on with a warning;
    a folder whose rows had another message is refused (exit 2) before a
    row is written."""
    import sqlite3
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_images()[:3]:
        (src / p.name).symlink_to(p)
    out = tmp_path / "out"
    common = ("--max-tokens", 4, "--parallel", 1)

    def meta(value=None, drop=False):
        db = sqlite3.connect(out / "_sluice_ledger.sqlite")
        try:
            with db:
                if drop:
                    db.execute("DELETE FROM meta WHERE key = 'default_system'")
                elif value is not None:
                    db.execute("UPDATE meta SET value = ? WHERE key = 'default_system'", (value,))
            row = db.execute("SELECT value FROM meta WHERE key = 'default_system'").fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def n_rows():
        return sum(len(p.read_text().splitlines()) for p in out.glob("part-*.jsonl"))

    r = caption(sluice, src, out, *common, "--limit", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert meta() == "You are a helpful assistant."
    assert n_rows() == 1
    meta(drop=True)  # as an earlier sluice left it
    r = caption(sluice, src, out, *common, "--limit", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (f"output folder '{out}' holds rows an earlier sluice prompted without the chat "
            "template's system message \"You are a helpful assistant.\"") in r.stderr, r.stderr[-3000:]
    assert meta() == "You are a helpful assistant." and n_rows() == 2
    meta("You are a pirate.")
    r = caption(sluice, src, out, *common)
    assert r.returncode == 2, r.stderr[-3000:]
    assert (f"output folder '{out}' holds rows prompted with the system message \"You are a "
            "pirate.\", and model") in r.stderr, r.stderr[-3000:]
    assert "now gives \"You are a helpful assistant.\"" in r.stderr, r.stderr[-3000:]
    assert n_rows() == 2
    meta("You are a helpful assistant.")
    r = caption(sluice, src, out, *common)
    assert r.returncode == 0 and "earlier sluice prompted" not in r.stderr, r.stderr[-3000:]
    assert n_rows() == 3
