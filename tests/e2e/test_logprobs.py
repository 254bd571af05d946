"""Log-probabilities (--logprobs N; a batch body's logprobs/top_logprobs;
docs/output.md "Log-probabilities"): each answer's tokens with their
log-probability and the N most likely tokens at each place, in OpenAI's
choices[].logprobs shape. The llama engine's numbers equal llama-server's
for the same requests (an independent implementation on the same model);
the columns are written in JSONL and Parquet (read back by pyarrow), per
task; the openai engine keeps the server's, streamed or not."""
import json
import math
import pathlib

import pytest
from openai.types.chat import ChatCompletion

from conftest import TINY, read_rows, sample_images


def sample_images_of(suffix: str) -> list[pathlib.Path]:
    return [p for p in sample_images() if p.suffix == "." + suffix]
from openai_helpers import LlamaServer

pq = pytest.importorskip("pyarrow.parquet")

LLAMA = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")
QUIET = ("--metrics-addr", "off", "--show", "0")


def check_content(content: list, generated: int, top: int, text: str | None = None,
                  greedy: bool = True, finish: str = "length"):
    """The shape OpenAI's SDK reads, one entry per generated token (and the
    end-of-generation token's when the model stopped: no stop strings in
    these tests); the alternatives best first, a distribution's share; a
    greedy token is the most likely one; the tokens' bytes spell the text."""
    assert len(content) == generated + (finish == "stop")
    spelled = b""
    for t in content:
        assert set(t) == {"id", "token", "logprob", "bytes", "top_logprobs"}
        assert t["logprob"] <= 0.0
        alts = t["top_logprobs"]
        assert len(alts) == top
        assert all(a["logprob"] >= b["logprob"] for a, b in zip(alts, alts[1:]))
        assert sum(math.exp(a["logprob"]) for a in alts) <= 1.0 + 1e-4
        assert t["logprob"] <= alts[0]["logprob"] + 1e-6
        if greedy:
            assert t["id"] == alts[0]["id"] and t["logprob"] == alts[0]["logprob"]
        for a in [t] + alts:
            assert bytes(a["bytes"]).decode("utf-8", "ignore").startswith(a["token"])
        spelled += bytes(t["bytes"])
    if text is not None:
        assert spelled.decode("utf-8", "replace") == text


def test_caption_writes_logprobs_in_jsonl_and_parquet(sluice, four, tmp_path):
    res = sluice.caption(four, tmp_path / "j", *QUIET, "--max-tokens", "8", "--logprobs", "3")
    assert res.returncode == 0, res.stderr
    rows = read_rows(tmp_path / "j")
    assert len(rows) == 4
    for r in rows:
        check_content(r["logprobs"]["content"], r["generated_tokens"], 3, r["caption"],
                      finish=r["finish_reason"])
    res = sluice.caption(four, tmp_path / "p", *QUIET, "--max-tokens", "8", "--logprobs", "3",
                         "--format", "parquet")
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / "p" / "part-00000.parquet")
    assert str(table.schema.field("logprobs").type) == "string"
    by_id = {r["id"]: r for r in rows}
    for r in table.to_pylist():
        got = json.loads(r["logprobs"])["content"]
        check_content(got, r["generated_tokens"], 3, finish=r["finish_reason"])
        want = by_id[r["id"]]["logprobs"]["content"]
        assert [t["id"] for t in got] == [t["id"] for t in want]
        for a, b in zip(got, want):
            assert abs(a["logprob"] - b["logprob"]) < 1e-4
    # DuckDB reads the JSON text as docs/output.md says.
    duckdb = pytest.importorskip("duckdb")
    part = tmp_path / "p" / "part-00000.parquet"
    got = dict(duckdb.sql(f"SELECT id, json_extract(logprobs, '$.content[0].logprob')::DOUBLE "
                          f"FROM read_parquet('{part}')").fetchall())
    assert set(got) == set(by_id)
    for k, r in by_id.items():  # the Parquet run's numbers, within its batching's rounding
        assert abs(got[k] - r["logprobs"]["content"][0]["logprob"]) < 1e-4
    # Not asked: no column at all.
    res = sluice.caption(four, tmp_path / "none", *QUIET, "--max-tokens", "2")
    assert res.returncode == 0, res.stderr
    assert all("logprobs" not in r for r in read_rows(tmp_path / "none"))


@pytest.mark.parametrize("flag", ["--presence-penalty", "--frequency-penalty"])
def test_penalties_lower_the_tokens_the_answer_holds(sluice, four, tmp_path, flag):
    """OpenAI's and vLLM's presence and frequency penalties (sluice had
    neither: a vLLM script's presence_penalty had no place here). Greedy
    under a penalty P, each token is the best of the model's own
    log-probabilities at its place (--logprobs: before penalties) less P
    for a token the answer already holds (presence) or P times its count
    there (frequency): the prompt's tokens take none. P is small (0.3), so
    answers of 32 tokens hold tokens twice and the two penalties part (a
    chain with them swapped failed both). The answers are not the plain
    greedy ones."""
    penalty = 0.3
    plain = sluice.caption(four, tmp_path / "plain", *QUIET, "--max-tokens", "32")
    res = sluice.caption(four, tmp_path / "penalised", *QUIET, "--max-tokens", "32",
                         "--logprobs", "20", flag, str(penalty))
    assert plain.returncode == 0 and res.returncode == 0, plain.stderr + res.stderr
    presence = flag == "--presence-penalty"
    rows = read_rows(tmp_path / "penalised")
    for r in rows:
        held = {}
        for t in r["logprobs"]["content"]:
            def score(alt):
                n = held.get(alt["id"], 0)
                return alt["logprob"] - penalty * (min(n, 1) if presence else n)
            assert t["id"] == max(t["top_logprobs"], key=score)["id"], (r["id"], t, held)
            held[t["id"]] = held.get(t["id"], 0) + 1
    params = json.loads((tmp_path / "penalised" / "_summary.json").read_text())["params"]
    assert params["presence_penalty" if presence else "frequency_penalty"] == pytest.approx(penalty)
    assert params["frequency_penalty" if presence else "presence_penalty"] == 0, params
    before = {r["id"]: r["caption"] for r in read_rows(tmp_path / "plain")}
    assert any(before[r["id"]] != r["caption"] for r in rows), "no answer held a repeat"


def test_a_tasks_logprobs_get_a_column_of_its_own(sluice, four, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({
        "yes_no": {"prompt": "Is there a person? Answer yes or no.",
                   "sampling": {"max_tokens": 3, "logprobs": 5}},
        "short": {"prompt": "Describe this image in one sentence.",
                  "sampling": {"max_tokens": 6}}}))
    res = sluice.caption(four, tmp_path / "wide", *QUIET, "--tasks", tasks)
    assert res.returncode == 0, res.stderr
    for r in read_rows(tmp_path / "wide"):
        assert "short_logprobs" not in r and "logprobs" not in r
        check_content(r["yes_no_logprobs"]["content"], r["yes_no_generated_tokens"], 5,
                      finish=r["yes_no_finish_reason"])
    res = sluice.caption(four, tmp_path / "long", *QUIET, "--tasks", tasks, "--rows-per-task")
    assert res.returncode == 0, res.stderr
    rows = read_rows(tmp_path / "long")
    assert len(rows) == 8
    for r in rows:
        if r["task"] == "short":
            assert r["logprobs"] is None
        else:
            check_content(r["logprobs"]["content"], r["generated_tokens"], 5,
                          finish=r["finish_reason"])


def test_wrong_logprobs_settings_say_what_to_change(sluice, four, tmp_path):
    res = sluice.caption(four, tmp_path / "o", *QUIET, "--logprobs", "21")
    assert res.returncode == 2
    assert "--logprobs" in res.stderr and "20" in res.stderr
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "x", "sampling": {"logprobs": 1.5}}}))
    res = sluice.caption(four, tmp_path / "o", *QUIET, "--tasks", tasks)
    assert res.returncode == 2
    assert "sampling.logprobs" in res.stderr and str(tasks) in res.stderr


def line(custom_id: str, prompt: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": prompt}], **body}})


PROMPTS = {"hello": "Say hello.", "colour": "Name a colour.", "count": "Count to five."}


def test_batch_logprobs_equal_llama_servers(sluice, llama_prefix, tmp_path):
    """The same text requests through the llama engine and through
    llama-server (which computes its own log-softmax over the same model's
    logits): the same tokens, log-probabilities within float rounding."""
    requests = tmp_path / "requests.jsonl"
    lines = [line(k, p, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4)
             for k, p in PROMPTS.items()]
    lines.append(line("too-many", "x", logprobs=True, top_logprobs=30))
    lines.append(line("no-logprobs", "Say hello.", max_tokens=4))
    requests.write_text("\n".join(lines) + "\n")
    res = sluice.run("batch", requests, "-o", tmp_path / "llama", *QUIET, *LLAMA)
    assert res.returncode == 3, res.stderr  # the line asking for 30
    with LlamaServer(llama_prefix, tmp_path / "server.log", 1) as server:
        res = sluice.run("batch", requests, "-o", tmp_path / "server", *QUIET, "--engine",
                         "openai", "--endpoint", server.url, "--ignore-model")
    assert res.returncode == 3, res.stderr
    answers = {}
    for engine in ("llama", "server"):
        rows = {}
        for t in (tmp_path / engine / "part-00000.jsonl").read_text().splitlines():
            r = json.loads(t)
            rows[r["custom_id"]] = r
        bad = rows["too-many"]["error"]["message"]
        assert "top_logprobs" in bad and ("20" in bad or engine == "server"), bad
        body = rows["no-logprobs"]["response"]["body"]
        assert body["choices"][0].get("logprobs") is None
        answers[engine] = {k: ChatCompletion.model_validate(rows[k]["response"]["body"])
                           for k in PROMPTS}
    compared = 0
    for k in PROMPTS:
        ours, theirs = answers["llama"][k], answers["server"][k]
        assert ours.choices[0].message.content == theirs.choices[0].message.content, k
        a = [t.model_dump() | {"id": t.model_extra.get("id")} for t in ours.choices[0].logprobs.content]
        b = [t.model_dump() for t in theirs.choices[0].logprobs.content]
        check_content([{f: x[f] for f in ("id", "token", "logprob", "bytes", "top_logprobs")}
                       for x in a], ours.usage.completion_tokens, 4,
                      ours.choices[0].message.content, finish=ours.choices[0].finish_reason)
        # llama-server counts the end-of-generation token as a completion token.
        assert len(a) == len(b) == theirs.usage.completion_tokens
        for x, y in zip(a, b):
            assert x["bytes"] == y["bytes"] and x["token"] == y["token"]
            assert abs(x["logprob"] - y["logprob"]) < 2e-3, (k, x, y)
            server_alts = {bytes(t["bytes"]): t["logprob"] for t in y["top_logprobs"]}
            for alt in x["top_logprobs"]:
                if bytes(alt["bytes"]) in server_alts:
                    assert abs(alt["logprob"] - server_alts[bytes(alt["bytes"])]) < 2e-3
                    compared += 1
    assert compared >= 3 * 8  # most alternatives appear in both lists


def test_openai_engine_keeps_the_servers_logprobs_streamed_or_not(sluice, llama_prefix, four,
                                                                 tmp_path):
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server:
        got = {}
        for mode in ("plain", "stream"):
            extra = ("--stream",) if mode == "stream" else ()
            res = sluice.run("caption", four, "-o", tmp_path / mode, *QUIET, "--engine",
                             "openai", "--endpoint", server.url, "--max-tokens", "6",
                             "--logprobs", "2", *extra)
            assert res.returncode == 0, res.stderr
            got[mode] = {r["id"]: r for r in read_rows(tmp_path / mode)}
    assert len(got["plain"]) == 4
    for k, r in got["plain"].items():
        content = r["logprobs"]["content"]
        assert len(content) == r["generated_tokens"] >= 1  # the server counts its end token
        s = got["stream"][k]
        assert s["caption"] == r["caption"]
        assert [t["bytes"] for t in s["logprobs"]["content"]] == [t["bytes"] for t in content]
        for a, b in zip(s["logprobs"]["content"], content):
            # The server batches its two sequences differently run to run.
            assert abs(a["logprob"] - b["logprob"]) < 2e-3
            assert len(a["top_logprobs"]) == 2


FILTER = """
-- Keeps a row when its first token was likely enough; writes what it read.
function init(config) threshold = config.threshold end
function process(row)
  local lp = row.logprobs or row:task_logprobs("yes_no")
  local first = lp.content[1]
  row.columns.first_token = first.token
  row.columns.first_p = math.exp(first.logprob)
  row.columns.alternatives = #first.top_logprobs
  if row.columns.first_p < threshold then return nil end
  return row
end
"""


def test_a_lua_stage_reads_the_logprobs(sluice, four, tmp_path):
    """A filter stage after the engine reads row.logprobs (and
    row:task_logprobs(name)) as Lua tables: the values it writes are the
    ones in the row's logprobs column, and it drops the rows under its
    threshold (the median of the first tokens' probabilities)."""
    script = tmp_path / "filter.lua"
    script.write_text(FILTER)
    res = sluice.caption(four, tmp_path / "all", *QUIET, "--max-tokens", "4", "--logprobs", "2")
    assert res.returncode == 0, res.stderr
    probs = sorted(math.exp(r["logprobs"]["content"][0]["logprob"])
                   for r in read_rows(tmp_path / "all"))
    threshold = (probs[1] + probs[2]) / 2
    stage = json.dumps({"lua": str(script), "after": "engine",
                        "config": {"threshold": threshold}})
    res = sluice.caption(four, tmp_path / "kept", *QUIET, "--max-tokens", "4", "--logprobs", "2",
                         "--stage", stage)
    assert res.returncode == 0, res.stderr
    rows = read_rows(tmp_path / "kept")
    assert len(rows) == 2 == sum(p >= threshold for p in probs)
    for r in rows:
        first = r["logprobs"]["content"][0]
        assert r["first_token"] == first["token"]
        assert abs(r["first_p"] - math.exp(first["logprob"])) < 1e-9
        assert r["alternatives"] == 2
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"yes_no": {"prompt": "Is there a person? Answer yes or no.",
                                            "sampling": {"max_tokens": 2, "logprobs": 3}}}))
    stage = json.dumps({"lua": str(script), "after": "engine", "config": {"threshold": 0}})
    res = sluice.caption(four, tmp_path / "task", *QUIET, "--tasks", tasks, "--stage", stage)
    assert res.returncode == 0, res.stderr
    for r in read_rows(tmp_path / "task"):
        assert r["first_token"] == r["yes_no_logprobs"]["content"][0]["token"]
        assert r["alternatives"] == 3


def test_logprobs_are_part_of_the_job(sluice, four, tmp_path):
    """The column is the job's: a finished job rerun with --logprobs (or
    with another N) is refused as other settings are, naming the setting;
    _summary.json's params say what was asked."""
    out = tmp_path / "out"
    res = sluice.caption(four, out, *QUIET, "--max-tokens", "2", "--logprobs", "2")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "_summary.json").read_text())["params"]["logprobs"] == 2
    for extra in (("--logprobs", "3"), ()):
        res = sluice.caption(four, out, *QUIET, "--max-tokens", "2", *extra)
        assert res.returncode == 2, res.stderr
        assert "logprobs" in res.stderr and "--overwrite" in res.stderr
    res = sluice.caption(four, out, *QUIET, "--max-tokens", "2", "--logprobs", "2")
    assert res.returncode == 0 and "nothing new" in res.stdout


def test_the_yes_no_example_filters_by_probability(sluice, four, tmp_path):
    """examples/yes_no.yaml (a task with logprobs, examples/yes_no.lua after
    the engine) on the tiny model: p_yes is the probability of the first
    token's alternatives that read as the word, from the row's own
    logprobs; a threshold drops the rows under it. The random model never
    says "yes", so the word is one it does say first."""
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "yes_no.yaml"
    def run(out, **config):
        stage = json.dumps({"lua": str(example.parent / "yes_no.lua"), "after": "engine",
                            "columns": ["p_yes"], "config": {"task": "person", **config}})
        res = sluice.run("run", example, four, "-o", out, *LLAMA, *QUIET, "--format", "jsonl",
                         "--stage", stage)
        assert res.returncode == 0, res.stderr
        return read_rows(out)
    rows = run(tmp_path / "probe", threshold=0)
    firsts = [r["person_logprobs"]["content"][0] for r in rows]
    word = firsts[0]["top_logprobs"][0]["token"].strip().lower()
    assert word, firsts[0]
    rows = run(tmp_path / "all", threshold=0, word=word)
    assert len(rows) == 4
    p = {}
    for r in rows:
        alts = r["person_logprobs"]["content"][0]["top_logprobs"]
        assert len(alts) == 10
        want = sum(math.exp(a["logprob"]) for a in alts if a["token"].strip().lower() == word)
        assert abs(r["p_yes"] - want) < 1e-9
        p[r["id"]] = r["p_yes"]
    assert max(p.values()) > 0
    cut = max(p.values())
    kept = run(tmp_path / "kept", threshold=cut, word=word)
    assert sorted(r["id"] for r in kept) == sorted(k for k, v in p.items() if v >= cut)


def test_logprobs_count_in_the_memory_in_flight(sluice, tmp_path):
    """A row's answers count against the memory budget once the engine
    returns them: one image shrunk to 32 px (its pixels a few KB), 64
    tokens with 20 alternatives each: the run's peak bytes in flight grow
    by about the logprobs' size over the same run without them."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "one.jpg").symlink_to(sorted(sample_images_of("jpg"))[0])
    peaks, sizes = {}, {}
    for name, extra in (("plain", ()), ("lp", ("--logprobs", "20"))):
        out = tmp_path / name
        res = sluice.caption(src, out, *QUIET, "--max-tokens", "64", "--max-image-edge", "32",
                             *extra)
        assert res.returncode == 0, res.stderr
        peaks[name] = json.loads((out / "_summary.json").read_text())["memory"][
            "peak_bytes_in_flight"]
        row = read_rows(out)[0]
        sizes[name] = len(json.dumps(row.get("logprobs"), separators=(",", ":")))
    assert sizes["lp"] > 20_000
    assert peaks["lp"] - peaks["plain"] >= 0.8 * sizes["lp"], (peaks, sizes)
