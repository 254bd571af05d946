"""--turns last (docs/inputs.md "Conversations"): a row's conversation is sent
whole up to its last human turn, which the model answers. Checked: the
messages an HTTP server receives (roles, order, each image where its
marker or image part is, the job's --system only without a system turn,
the dataset's last answer left out), rows that cannot be sent failing
alone by id and turn, refusals beside tasks and batch files and on resume,
and on the llama engine the same greedy answer and prompt length as
`sluice batch` gives the same messages."""
import base64
import json
import pathlib
import signal
import subprocess
import threading
from collections import Counter

import pytest
from conftest import SAMPLES, TINY, read_rows
from openai_helpers import FakeServer, completion, reply
from test_image_lists import QUIET, colour_of, colours  # noqa: F401 (colours: a fixture)

LLAMA = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")


def shown(messages: list) -> list:
    """The messages with each image part as its colour."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [p["text"] if p["type"] == "text" else
                       colour_of(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))
                       for p in content]
        out.append((m["role"], content))
    return out


ROWS = [
    {"id": "llava", "image": "red.png", "conversations": [
        {"from": "system", "value": "Be terse."},
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A square."},
        {"from": "human", "value": "Which colour?"},
        {"from": "gpt", "value": "Red, the answer to be written anew."}]},
    {"id": "pair", "images": ["green.png", "blue.png"], "conversations": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "First?"}]},
        {"role": "assistant", "content": "Green."},
        {"role": "user", "content": [{"type": "text", "text": "Second?"}, {"type": "image"}]}]},
    {"id": "unmarked", "image": "white.png", "conversations": [
        {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
        {"from": "human", "value": ""}, {"from": "human", "value": "Q2"}]},
    {"id": "no-human", "image": "blue.png", "conversations": [{"from": "gpt", "value": "x"}]},
    {"id": "bad-marks", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image> or <image>?"}]},
    {"id": "narrator", "image": "red.png", "conversations": [
        {"from": "human", "value": "Q"}, {"from": "narrator", "value": "Meanwhile"},
        {"from": "human", "value": "Q again"}]},
]


def test_the_turns_go_to_the_server_as_a_chat(sluice, colours, tmp_path):
    (colours / "chats.json").write_text(json.dumps(ROWS))
    sent = {}

    def answer(handler, n, body):
        last = body["messages"][-1]["content"]
        key = last if isinstance(last, str) else "".join(p.get("text", "") for p in last)
        sent[key] = body["messages"]
        completion(handler, "an answer")

    args = ("--prompt-column", "conversations", "--turns", "last", "--image-placeholder", "<image>",
            "--image-text", "Image {index}:", "--system", "Sys.", "--prompt", "The job's prompt.",
            *QUIET)
    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", colours / "chats.json", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, *args)
        assert r.returncode == 3, r.stderr  # two rows fail, the others are answered
        assert shown(sent["Which colour?"]) == [
            ("system", "Be terse."), ("user", ["red", "\nWhat is it?"]),
            ("assistant", "A square."), ("user", "Which colour?")]
        assert shown(sent["Second?Image 2:"]) == [
            ("system", "Sys."), ("user", ["Image 1:", "green", "First?"]),
            ("assistant", "Green."), ("user", ["Second?", "Image 2:", "blue"])]
        assert shown(sent["Q2"]) == [
            ("system", "Sys."), ("user", ["white", "Q1"]), ("assistant", "A1"), ("user", "Q2")]
        # No human turn: the job's prompt, as without --turns.
        assert shown(sent["The job's prompt."]) == [
            ("system", "Sys."), ("user", ["blue", "The job's prompt."])]
        assert len(sent) == 4

        rows = {row["id"]: row for row in read_rows(out)}
        assert rows["llava"]["caption"] == "an answer"
        assert rows["llava"]["conversations"] == ROWS[0]["conversations"]  # passes through whole
        assert rows["bad-marks"]["caption"] is None
        assert "bad-marks" in rows["bad-marks"]["error"]
        assert "2 image markers" in rows["bad-marks"]["error"]
        assert "turn 1 of the conversation is by 'narrator'" in rows["narrator"]["error"]

        # The fingerprint holds the setting: the other one does not resume this folder.
        r = sluice.run("caption", colours / "chats.json", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, *args[:2], "--turns", "first", *args[4:])
        assert r.returncode == 2
        assert "turns" in r.stderr


def text_of(content) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def test_all_turns_are_answered_in_order_into_the_conversation(sluice, colours, tmp_path):
    """--turns all: each human turn is asked after the model's own answers to
    the ones before (not the dataset's), each answer goes into the
    conversation in the dataset's form, caption is the last answer and the
    token counts are all the answers'; a question the server refuses fails
    the row naming it, the answers before it kept with their token counts.
    The Parquet column keeps its type."""
    pq = pytest.importorskip("pyarrow.parquet")
    rows = ROWS[:2] + [{"id": "refused", "image": "white.png", "conversations": [
        {"from": "human", "value": "Q1"}, {"from": "human", "value": "REFUSE"}]}]
    (colours / "chats.json").write_text(json.dumps(rows))
    asked = []

    def answer(handler, n, body):
        asked.append(shown(body["messages"]))
        last = text_of(body["messages"][-1]["content"])
        if last == "REFUSE":
            reply(handler, 400, b'{"error": {"message": "no, not this one"}}')
        else:
            completion(handler, "re: " + last)

    with FakeServer(answer) as server:
        for fmt in ("jsonl", "parquet"):
            asked.clear()
            out = tmp_path / fmt
            r = sluice.run("caption", colours / "chats.json", "-o", out, "--engine", "openai",
                           "--endpoint", server.url, "--prompt-column", "conversations",
                           "--turns", "all", "--image-placeholder", "<image>", "--format", fmt,
                           "--max-in-flight", "1", *QUIET)
            assert r.returncode == 3, r.stderr
            assert [("system", "Be terse."), ("user", ["red", "\nWhat is it?"])] in asked
            assert [("system", "Be terse."), ("user", ["red", "\nWhat is it?"]),
                    ("assistant", "re: \nWhat is it?"), ("user", "Which colour?")] in asked
            assert [("user", ["green", "First?"]), ("assistant", "re: First?"),
                    ("user", ["Second?", "blue"])] in asked
            assert len(asked) == 6  # 2 + 2 + 2, the last refused
            if fmt == "jsonl":
                got = {row["id"]: row for row in read_rows(out)}
            else:
                got = {row["id"]: row for row in pq.read_table(out / "part-00000.parquet").to_pylist()}
            llava = got["llava"]
            assert llava["caption"] == "re: Which colour?"
            assert (llava["prompt_tokens"], llava["generated_tokens"]) == (20, 6)
            want = [dict(t) for t in ROWS[0]["conversations"]]
            want[2]["value"], want[4]["value"] = "re: \nWhat is it?", "re: Which colour?"
            # Parquet: one struct of both forms' keys (a turn's others null).
            assert [{k: v for k, v in t.items() if v is not None}
                    for t in llava["conversations"]] == want
            if fmt == "jsonl":  # (in Parquet, content mixes strings and parts: JSON text)
                pair = got["pair"]["conversations"]
                assert pair[1] == {"role": "assistant", "content": "re: First?"}
                assert pair[3] == {"role": "assistant",
                                   "content": [{"type": "text", "text": "re: Second?"}]}
            refused = got["refused"]
            assert refused["caption"] is None
            assert "question 2 of 2" in refused["error"] and "no, not this one" in refused["error"]
            # Its first answer is in the conversation, and so are its tokens.
            assert refused["conversations"][1]["value"] == "re: Q1"
            assert (refused["prompt_tokens"], refused["generated_tokens"]) == (10, 3)


def test_a_question_past_the_message_limit_fails_naming_it(sluice, colours, tmp_path):
    """--turns all on a conversation of 130 questions: the 129th would make
    257 messages, more than a request may have; the row fails naming that
    question, with the 128 answers before it in its conversation and their
    tokens counted."""
    turns = []
    for k in range(130):
        turns += [{"from": "human", "value": f"Q{k + 1}"}, {"from": "gpt", "value": "old"}]
    (colours / "long.json").write_text(json.dumps(
        [{"id": "long", "image": "red.png", "conversations": turns}]))
    asked = []

    def answer(handler, n, body):
        asked.append(len(body["messages"]))
        completion(handler, "re: " + text_of(body["messages"][-1]["content"]))

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", colours / "long.json", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, "--prompt-column", "conversations",
                       "--turns", "all", "--max-in-flight", "1", *QUIET)
    assert r.returncode == 3, r.stderr
    assert asked == [2 * k + 1 for k in range(128)]
    (row,) = read_rows(out)
    assert "question 129 of 130" in row["error"] and "more than the 256" in row["error"]
    assert row["caption"] is None
    assert row["conversations"][255]["value"] == "re: Q128"
    assert row["conversations"][257]["value"] == "old"
    assert (row["prompt_tokens"], row["generated_tokens"]) == (128 * 10, 128 * 3)


def test_an_invalid_answer_to_a_later_question_keeps_every_answers_tokens(sluice, colours, tmp_path):
    """--turns all with --json-schema: the second answer is not JSON; the row
    fails as invalid_output naming question 2 of 2, and its token counts are
    both answers' (the first is in the conversation)."""
    (colours / "two.json").write_text(json.dumps([{"id": "two", "image": "red.png", "conversations": [
        {"from": "human", "value": "Q1"}, {"from": "human", "value": "Q2"}]}]))
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"label": {"type": "string"}},
                                  "required": ["label"]}))

    def answer(handler, n, body):
        last = text_of(body["messages"][-1]["content"])
        completion(handler, '{"label": "red"}' if last == "Q1" else "not json at all")

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", colours / "two.json", "-o", out, "--engine", "openai",
                       "--endpoint", server.url, "--prompt-column", "conversations",
                       "--turns", "all", "--json-schema", schema, *QUIET)
    assert r.returncode == 3, r.stderr
    (row,) = read_rows(out)
    assert "question 2 of 2" in row["error"] and "not json at all" in row["error"], row["error"]
    assert row["caption"] is None
    assert row["conversations"][1]["value"] == '{"label": "red"}'
    assert (row["prompt_tokens"], row["generated_tokens"]) == (20, 6)


def test_wrong_command_lines_say_what_to_change(sluice, colours, tmp_path):
    (colours / "chats.json").write_text(json.dumps(ROWS[:1]))
    r = sluice.run("caption", colours / "chats.json", "-o", tmp_path / "a", "--turns", "last",
                   "--task", "a=Describe.", *LLAMA, *QUIET)
    assert r.returncode == 2
    assert "--turns" in r.stderr and "task" in r.stderr
    r = sluice.run("caption", colours / "chats.json", "-o", tmp_path / "b", "--turns", "most",
                   *LLAMA, *QUIET)
    assert r.returncode == 2
    assert "first" in r.stderr and "last" in r.stderr and "all" in r.stderr
    r = sluice.run("caption", colours / "chats.json", "-o", tmp_path / "d", "--turns", "all",
                   "--samples", "2", *LLAMA, *QUIET)
    assert r.returncode == 2
    assert "--turns all" in r.stderr and "--samples 2" in r.stderr
    batch = tmp_path / "r.jsonl"
    batch.write_text(json.dumps({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [
        {"role": "user", "content": "hi"}]}}) + "\n")
    r = sluice.run("batch", batch, "-o", tmp_path / "c", "--turns", "last", *LLAMA, *QUIET)
    assert r.returncode == 2
    assert "--turns" in r.stderr and "batch" in r.stderr


def batch_answer(sluice, out, image, assistant: str, common) -> dict:
    """What `sluice batch` answers to the cup conversation with `assistant`
    as the first answer."""
    requests = out.with_suffix(".jsonl")
    requests.write_text(json.dumps({"custom_id": "cup", "url": "/v1/chat/completions", "body": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(image)}},
                                         {"type": "text", "text": "\nWhat is in the cup?"}]},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": "And the saucer?"}]}}) + "\n")
    r = sluice.run("batch", requests, "-o", out, "--allow-local-images", *common)
    assert r.returncode == 0, r.stderr
    [line] = [json.loads(s) for p in sorted(out.glob("part-*.jsonl")) for s in p.read_text().splitlines()]
    return line["response"]["body"]


def test_llama_answers_the_conversation_as_a_batch_line_does(sluice, tmp_path):
    """On the llama engine (greedy): --turns last answers as `sluice batch`
    does the same messages; --turns all's first answer is --turns first's,
    and its second what batch answers after that first answer."""
    image = SAMPLES / "coffee.jpg"
    turns = [{"from": "human", "value": "<image>\nWhat is in the cup?"},
             {"from": "gpt", "value": "Coffee, black."},
             {"from": "human", "value": "And the saucer?"},
             {"from": "gpt", "value": "not sent"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "cup", "image": str(image), "conversations": turns}) + "\n")
    common = ("--temperature", "0", "--max-tokens", "12", *LLAMA, *QUIET)
    rows = {}
    for which in ("first", "last", "all"):
        r = sluice.run("caption", manifest, "-o", tmp_path / which, "--prompt-column",
                       "conversations", "--turns", which, "--image-placeholder", "<image>",
                       "--system", "Be brief.", *common)
        assert r.returncode == 0, r.stderr
        [rows[which]] = read_rows(tmp_path / which)
    first, last, every = rows["first"], rows["last"], rows["all"]

    body = batch_answer(sluice, tmp_path / "batch-last", image, "Coffee, black.", common)
    assert last["caption"] == body["choices"][0]["message"]["content"]
    assert last["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert 0 < first["prompt_tokens"] < last["prompt_tokens"]  # the first turn alone is shorter

    assert every["conversations"][1] == {"from": "gpt", "value": first["caption"]}
    body = batch_answer(sluice, tmp_path / "batch-all", image, first["caption"], common)
    assert every["caption"] == body["choices"][0]["message"]["content"]
    assert every["conversations"][3] == {"from": "gpt", "value": every["caption"]}
    assert every["prompt_tokens"] == first["prompt_tokens"] + body["usage"]["prompt_tokens"]
    assert every["generated_tokens"] == first["generated_tokens"] + body["usage"]["completion_tokens"]


def test_a_stopped_run_finishes_its_conversations_and_the_rerun_the_rest(sluice, colours, tmp_path):
    """--turns all stopped by SIGINT: a row mid-way through its questions
    (back in the engine between answers, which the executor does not see)
    is finished, every question, before it is written (exit 130); none is
    written half-answered or dropped. The same command again asks only the
    rows not written: every row once, each conversation with its three
    answers, no question asked twice over both runs."""
    n = 200

    def questions(i: int) -> list[str]:
        return [f"r{i:03d} Q{k}" for k in (1, 2, 3)]

    rows = [{"id": f"r{i:03d}", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\n" + questions(i)[0]}, {"from": "gpt", "value": "old 1"},
        {"from": "human", "value": questions(i)[1]}, {"from": "gpt", "value": "old 2"},
        {"from": "human", "value": questions(i)[2]}]} for i in range(n)]
    (colours / "chats.json").write_text(json.dumps(rows))
    asked = Counter()
    lock = threading.Lock()
    run = {}

    def answer(handler, attempt, body):
        question = text_of(body["messages"][-1]["content"]).strip()
        with lock:
            asked[question] += 1
            # The stop lands while this row's second question is at the
            # server: its third is still to be asked.
            if ("proc" in run and "midway" not in run and question.endswith("Q2")
                    and sum(asked.values()) >= 30):
                run["midway"] = question.split()[0]
                run["proc"].send_signal(signal.SIGINT)
        completion(handler, "re: " + question, delay_s=0.02)

    def written(out) -> list[dict]:
        return [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
                for line in part.read_text().splitlines()]

    def answered_whole(row) -> bool:
        i = int(row["id"][1:])
        want = [dict(t) for t in rows[i]["conversations"]] + [{"from": "gpt", "value": None}]
        for k, q in enumerate(questions(i)):
            want[2 * k + 1]["value"] = "re: " + q
        return (row["error"] is None and row["caption"] == "re: " + questions(i)[2]
                and row["conversations"] == want)

    out = tmp_path / "out"
    cmd = [str(sluice.binary), "caption", str(colours / "chats.json"), "-o", str(out),
           "--engine", "openai", "--prompt-column", "conversations", "--turns", "all",
           "--image-placeholder", "<image>", "--max-in-flight", "4", *map(str, QUIET)]
    with FakeServer(answer) as server:
        cmd += ["--endpoint", server.url]
        log = tmp_path / "stopped.log"
        with open(log, "w") as err:
            with lock:
                run["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            rc = run["proc"].wait(timeout=120)
        text = log.read_text()
        assert "midway" in run, f"the run ended before it was stopped (exit {rc}): {text[-2000:]}"
        assert rc == 130, text[-2000:]
        assert "stopped on request" in text
        first = written(out)
        ids = [row["id"] for row in first]
        assert run["midway"] in ids  # finished after the stop, not dropped
        assert 0 < len(ids) < n and len(set(ids)) == len(ids)
        assert [row["id"] for row in first if not answered_whole(row)] == []
        # Nothing asked for a row not written (none dropped mid-way), nothing twice.
        assert sorted(asked) == sorted(q for row_id in ids for q in questions(int(row_id[1:])))
        assert set(asked.values()) == {1}

        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        every = written(out)
        assert sorted(row["id"] for row in every) == [f"r{i:03d}" for i in range(n)]
        assert [row["id"] for row in every if not answered_whole(row)] == []
        assert len(asked) == 3 * n and set(asked.values()) == {1}


def test_the_regenerate_example_answers_every_turn(sluice, tmp_path):
    """examples/regenerate.yaml on the tiny model: each conversation of
    examples/conversations.json comes out with one model answer after each
    of its human turns (the dataset's replaced), the last one the row's
    caption, in a Parquet list<struct<from, value>> column that pyarrow and
    DuckDB read."""
    pq = pytest.importorskip("pyarrow.parquet")
    duckdb = pytest.importorskip("duckdb")
    repo = SAMPLES.parent
    dataset = {row["id"]: row for row in json.loads((repo / "examples" / "conversations.json").read_text())}
    # From the repository root, as the example says: its paths are relative to it.
    r = subprocess.run([str(pathlib.Path(sluice.binary).resolve()), "run", "examples/regenerate.yaml",
                        "-o", str(tmp_path / "out"), *map(str, LLAMA), *map(str, QUIET),
                        "--max-tokens", "8"], cwd=repo, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    part = tmp_path / "out" / "part-00000.parquet"
    table = pq.read_table(part)
    assert str(table.schema.field("conversations").type) == \
        "list<element: struct<from: string, value: string>>"
    rows = {row["id"]: row for row in table.to_pylist()}
    assert sorted(rows) == sorted(dataset)
    for row_id, row in rows.items():
        before, after = dataset[row_id]["conversations"], row["conversations"]
        assert [t["from"] for t in after] == [t["from"] for t in before]
        for old, new in zip(before, after):
            if old["from"] == "gpt":
                assert new["value"] != old["value"]  # the model's, not the dataset's
            else:
                assert new == old
        assert after[-1]["value"] == row["caption"]
    got = duckdb.sql(f"select id, len(conversations), conversations[-1]['value'] = caption "
                     f"from '{part}' order by id").fetchall()
    assert got == [(i, len(dataset[i]["conversations"]), True) for i in sorted(dataset)]
