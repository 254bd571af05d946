"""Choices (--choices, a task's "choices"; docs/output.md "Choices"): the
answer is one of the given strings, read from the model's next-token
probabilities, with each choice's score in column `scores` (JSONL an
object, Parquet its JSON text, read by pyarrow and queried by DuckDB);
greedy takes the highest score, a temperature draws with the row's seed
(a rerun draws the same); tasks mix choices with free answers; a job file
sets them; choices that begin alike are told apart where they part;
choices alike for 32 tokens, or settings that cannot go with them, stop
the job before any row with exit 2; other choices are
another job (a rerun is refused)."""
import json
import math
import pathlib
import subprocess

import duckdb
import pyarrow.parquet as pq

from conftest import SAMPLES, TINY, read_rows, sample_images
from openai_helpers import LlamaServer

CHOICES = ["yes", "no", "maybe"]


def probes(out):
    """Choice probes a finished run decoded (its _metrics.prom)."""
    text = (out / "_metrics.prom").read_text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sluice_engine_choice_probes_total{"))


def assert_scored(row, choices, answer="caption", scores="scores"):
    assert row.get("error") is None, row
    got = row[scores]
    if isinstance(got, str):  # Parquet: the object's JSON text
        got = json.loads(got)
    assert list(got) == choices, got
    assert abs(sum(got.values()) - 1.0) < 1e-4, got
    assert all(0.0 <= v <= 1.0 for v in got.values()), got
    assert row[answer] in choices, row
    return got


def test_greedy_takes_the_highest_score(sluice, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--choices", "yes, no,maybe", "--prompt", "Is this a photo?",
                       "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == len(sample_images())
    for row in rows:
        scores = assert_scored(row, CHOICES)
        assert row["caption"] == max(scores, key=scores.get), row
        assert row["finish_reason"] == "stop" and row["generated_tokens"] == 1, row
    # The model does not rank every image alike: the scores come from each one.
    assert len({json.dumps(row["scores"]) for row in rows}) > 1
    assert probes(out) == 0  # yes, no and maybe begin differently
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["params"]["choices"] == CHOICES
    # How many rows took each choice: _summary.json and the console's line.
    taken = {c: sum(row["caption"] == c for row in rows) for c in CHOICES}
    assert summary["answers"] == {"caption": taken}
    line = ", ".join(f"{c} {n} ({100 * n / len(rows):.0f}%)" for c, n in taken.items())
    assert f"answers: {line}\n" in r.stdout, r.stdout


def test_a_temperature_draws_by_the_row_seed(sluice, tmp_path):
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        r = sluice.caption(SAMPLES, out, "--choices", ",".join(CHOICES), "--temperature", 5,
                           "--seed", 7, "--show", 0, "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        runs.append({row["id"]: row for row in read_rows(out)})
    assert {i: row["caption"] for i, row in runs[0].items()} == \
        {i: row["caption"] for i, row in runs[1].items()}
    # At temperature 5 the scores are nearly flat: some draw is not the highest.
    drawn_lower = 0
    for row in runs[0].values():
        scores = assert_scored(row, CHOICES)
        drawn_lower += row["caption"] != max(scores, key=scores.get)
    assert drawn_lower > 0


def test_parquet_scores_are_read_by_pyarrow_and_duckdb(sluice, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--choices", "yes,no", "--format", "parquet", "--show", 0,
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out / "part-00000.parquet")
    assert "scores" in table.column_names
    rows = table.to_pylist()
    yes = []
    for row in rows:
        scores = assert_scored(row, ["yes", "no"])
        yes.append(scores["yes"])
        assert (row["caption"] == "yes") == (scores["yes"] > scores["no"]), row
    # A threshold that splits the rows: DuckDB reads each value as pyarrow did.
    cut = sorted(yes)[len(yes) // 2]
    above = sum(v >= cut for v in yes)
    assert 0 < above < len(yes)
    got = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/part-*.parquet') "
        f"WHERE CAST(json_extract(scores, '$.yes') AS DOUBLE) >= {cut!r}").fetchall()[0][0]
    assert got == above


def test_tasks_mix_choices_with_free_answers(sluice, four, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({
        "photo": {"prompt": "Is this a photo?", "choices": ["yes", "no"]},
        "style": {"prompt": "Which style?", "choices": ["photo", "drawing", "render"]},
        "short": {"prompt": "Describe this image.", "sampling": {"max_tokens": 4}},
    }))
    out = tmp_path / "out"
    r = sluice.caption(four, out, "--tasks", tasks, "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == 4
    answers = json.loads((out / "_summary.json").read_text())["answers"]
    assert answers == {
        "photo": {c: sum(row["photo"] == c for row in rows) for c in ["yes", "no"]},
        "style": {c: sum(row["style"] == c for row in rows)
                  for c in ["photo", "drawing", "render"]}}
    for row in rows:
        assert_scored(row, ["yes", "no"], "photo", "photo_scores")
        assert_scored(row, ["photo", "drawing", "render"], "style", "style_scores")
        assert "short_scores" not in row and row["short_generated_tokens"] > 0, row
        assert "scores" not in row
    out = tmp_path / "per-task"
    r = sluice.caption(four, out, "--tasks", tasks, "--rows-per-task", "--format", "parquet",
                       "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert len(rows) == 12
    for row in rows:
        if row["task"] == "short":
            assert row["scores"] is None, row
        else:
            assert_scored(row, ["yes", "no"] if row["task"] == "photo"
                          else ["photo", "drawing", "render"])


def test_the_jobs_choices_go_to_every_task(sluice, four, tmp_path):
    """--choices with tasks: each task answers among them, in its own
    NAME_scores (no `scores` column beside them); with --rows-per-task in
    `scores`."""
    out = tmp_path / "out"
    tasks = ["--task", "a=Is this a photo?", "--task", "b=Is it a drawing?"]
    r = sluice.caption(four, out, "--choices", "yes,no", *tasks, "--show", 0,
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    for row in read_rows(out):
        assert "scores" not in row, row
        for t in ("a", "b"):
            assert_scored(row, ["yes", "no"], t, f"{t}_scores")
    out = tmp_path / "per-task"
    r = sluice.caption(four, out, "--choices", "yes,no", *tasks, "--rows-per-task",
                       "--format", "parquet", "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert len(rows) == 8
    for row in rows:
        assert_scored(row, ["yes", "no"])


def test_a_job_file_sets_choices(sluice, four, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
input: {{paths: [{json.dumps(str(four))}]}}
output: {{dir: {json.dumps(str(tmp_path / 'out'))}}}
llama: {{model: {json.dumps(str(TINY / 'model.gguf'))}, mmproj: {json.dumps(str(TINY / 'mmproj.gguf'))}}}
prompt: {{text: "Indoors or outdoors?"}}
sampling: {{choices: [indoors, outdoors]}}
metrics: {{addr: "off"}}
""")
    r = sluice.run("run", job, "--show", 0)
    assert r.returncode == 0, r.stderr
    for row in read_rows(tmp_path / "out"):
        assert_scored(row, ["indoors", "outdoors"])


def test_choices_that_begin_alike_are_told_apart_where_they_part(sluice, four, tmp_path):
    # "the red one" and "the blue one" begin with the same tokens; "1" is
    # inside "10": the model is read where they part (one probe a row).
    ratings = [str(k) for k in range(1, 11)]
    for choices in (["the red one", "the blue one", "neither"], ratings):
        out = tmp_path / f"out{len(choices)}"
        r = sluice.caption(four, out, "--choices", ",".join(choices), "--show", 0,
                           "--metrics-addr", "off", "--parallel", 2)
        assert r.returncode == 0, r.stderr
        rows = read_rows(out)
        assert len(rows) == 4
        for row in rows:
            scores = assert_scored(row, choices)
            assert row["caption"] == max(scores, key=scores.get), row
            assert row["generated_tokens"] == 1, row
        if choices[0] == "the red one":  # a probe a row at least: "the" parts them
            assert probes(out) >= len(rows)
        # The parted choices are not an even split of their first token's share.
        red, blue = (rows[0]["scores"][c] for c in choices[:2]) if choices[0] == "the red one" \
            else (rows[0]["scores"]["1"], rows[0]["scores"]["10"])
        assert abs(red - blue) > 1e-4, rows[0]


def test_choices_that_cannot_be_told_apart_stop_the_job(sluice, four, tmp_path):
    out = tmp_path / "out"
    # Two choices alike for their first 32 tokens.
    same = " ".join(["very"] * 40)
    r = sluice.caption(four, out, "--choices", f"{same} red,{same} blue", "--metrics-addr",
                       "off")
    assert r.returncode == 2, r.stderr
    assert f"'{same[:60]}' and '{same[:60]}' begin with the same 32 tokens" in r.stderr, r.stderr
    assert not list(out.glob("part-*"))


def test_settings_that_cannot_go_with_choices_are_refused(sluice, four, tmp_path):
    out = tmp_path / "out"
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "string"}')
    cases = [
        (["--choices", "yes"], "1 given"),
        (["--choices", "yes,no,yes"], "'yes' is given twice"),
        (["--choices", "yes,no", "--logprobs", 2], "not with --logprobs"),
        (["--choices", "yes,no", "--json-schema", schema], "not with --json-schema"),
    ]
    for args, says in cases:
        r = sluice.caption(four, out, *args, "--metrics-addr", "off")
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "Which?", "choices": "yes,no"}}))
    r = sluice.caption(four, out, "--tasks", tasks, "--metrics-addr", "off")
    assert r.returncode == 2 and "task 'a': choices must be a list" in r.stderr, r.stderr


def test_other_choices_are_another_job(sluice, four, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(four, out, "--choices", "yes,no", "--metrics-addr", "off", "--show", 0)
    assert r.returncode == 0, r.stderr
    r = sluice.caption(four, out, "--choices", "no,yes", "--metrics-addr", "off", "--show", 0)
    assert r.returncode == 2 and "--overwrite" in r.stderr, r.stderr
    r = sluice.caption(four, out, "--choices", "yes,no", "--metrics-addr", "off", "--show", 0)
    assert r.returncode == 0 and "all inputs were already done" in r.stdout, r.stdout + r.stderr


def test_the_filter_example_keeps_rows_by_score(sluice, four, tmp_path):
    """examples/filter.yaml (choices, examples/keep_if.lua after the engine)
    on the tiny model: the stage reads row.scores, writes the choice's score
    (equal to the row's scores column) and drops the rows under its
    threshold; with tasks it reads row:task_scores(name)."""
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "filter.yaml"

    stdout = {}

    def run(out, *extra, **config):
        stage = json.dumps({"lua": str(example.parent / "keep_if.lua"), "after": "engine",
                            "columns": ["p"], "config": {"column": "p", **config}})
        res = sluice.run("run", example, four, "-o", out, "--model", TINY / "model.gguf",
                         "--mmproj", TINY / "mmproj.gguf", "--format", "jsonl", "--show", 0,
                         "--metrics-addr", "off", "--stage", stage, *extra)
        assert res.returncode == 0, res.stderr
        stdout[out] = res.stdout
        return read_rows(out)

    def line(taken):
        total = sum(taken.values())
        return ", ".join(f"{c} {n} ({100 * n / total:.0f}%)" for c, n in taken.items())

    rows = run(tmp_path / "all", threshold=0)
    assert "answers dropped" not in stdout[tmp_path / "all"]
    assert "answers_dropped" not in json.loads((tmp_path / "all" / "_summary.json").read_text())
    assert len(rows) == 4
    p = {r["id"]: r["p"] for r in rows}
    for r in rows:
        assert r["p"] == assert_scored(r, ["yes", "no"])["yes"], r
    cut = sorted(p.values())[2]
    kept = run(tmp_path / "kept", threshold=cut)
    assert sorted(r["id"] for r in kept) == sorted(i for i, v in p.items() if v >= cut)
    assert 0 < len(kept) < 4
    # The rows the filter dropped were answered too: their choices (the
    # same greedy answers as in the run that kept all) are counted apart,
    # where the answers: line counted the written rows alone.
    kept_ids = {r["id"] for r in kept}
    want = {}
    for name, among in (("answers", [r for r in rows if r["id"] in kept_ids]),
                        ("answers_dropped", [r for r in rows if r["id"] not in kept_ids])):
        want[name] = {c: sum(r["caption"] == c for r in among) for c in ("yes", "no")}
    summary = json.loads((tmp_path / "kept" / "_summary.json").read_text())
    assert summary["answers"] == {"caption": want["answers"]}, summary
    assert summary["answers_dropped"] == {"caption": want["answers_dropped"]}, summary
    assert f"answers: {line(want['answers'])}\n" in stdout[tmp_path / "kept"]
    assert (f"answers dropped by a stage (not written): {line(want['answers_dropped'])}\n"
            in stdout[tmp_path / "kept"]), stdout[tmp_path / "kept"]
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"style": {"prompt": "Which?", "choices": ["photo", "drawing"]}}))
    stage = json.dumps({"lua": str(example.parent / "keep_if.lua"), "after": "engine",
                        "columns": ["p"], "config": {"column": "p", "threshold": 0,
                                                     "task": "style", "choice": "drawing"}})
    res = sluice.caption(four, tmp_path / "task", "--tasks", tasks, "--stage", stage, "--show", 0,
                         "--metrics-addr", "off")
    assert res.returncode == 0, res.stderr
    rows = read_rows(tmp_path / "task")
    assert len(rows) == 4
    for r in rows:
        assert r["p"] == assert_scored(r, ["photo", "drawing"], "style", "style_scores")["drawing"]


def test_a_choice_takes_one_position_whatever_max_tokens_says(sluice, four, tmp_path):
    """A job whose answers are all choices sizes its context for the prompts
    alone: --max-tokens past the model's context (2048) does not stop it, as
    it does a job that generates."""
    r = sluice.caption(four, tmp_path / "gen", "--max-tokens", 100000, "--metrics-addr", "off")
    assert r.returncode == 2 and "context" in r.stderr, r.stderr
    r = sluice.caption(four, tmp_path / "out", "--choices", "yes,no", "--max-tokens", 100000,
                       "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    for row in read_rows(tmp_path / "out"):
        assert_scored(row, ["yes", "no"])


def test_the_rate_example_writes_the_expected_rating(sluice, four, tmp_path):
    """examples/rate.yaml (choices 1..10, examples/mean_score.lua) on the
    tiny model, read back from Parquet with DuckDB: `rating` (a DOUBLE
    column: the stage declares "rating:double") is each choice's number
    weighted by its score; a choice that is not a number fails its row
    naming it; a column type that is none of the four stops the job."""
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "rate.yaml"
    out = tmp_path / "out"
    r = sluice.run("run", example, four, "-o", out, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = duckdb.sql(f"SELECT caption, scores, rating FROM '{out}/*.parquet'").fetchall()
    assert len(rows) == 4
    ratings = [str(k) for k in range(1, 11)]
    for caption, scores, rating in rows:
        scores = json.loads(scores)
        assert list(scores) == ratings and caption in ratings
        assert abs(rating - sum(int(k) * p for k, p in scores.items())) < 1e-4, (rating, scores)
        assert 1 <= rating <= 10
    r = sluice.run("run", example, four, "-o", tmp_path / "words", "--model",
                   TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf", "--show", 0,
                   "--metrics-addr", "off", "--choices", "low,high", "--format", "jsonl")
    assert r.returncode == 3, r.stderr  # rows failed
    for row in read_rows(tmp_path / "words"):
        assert "choice 'low' is not a number" in row["error"] or \
            "choice 'high' is not a number" in row["error"], row
    stage = json.dumps({"lua": str(example.parent / "mean_score.lua"), "after": "engine",
                        "columns": ["rating:float"]})
    r = sluice.run("run", example, four, "-o", tmp_path / "bad", "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--stage", stage)
    assert r.returncode == 2, r.stderr
    assert "column 'rating:float': the type after ':' is string, int64, double, bool, decimal(P,S) or " \
        "a shape" \
        in r.stderr, r.stderr


def test_the_openai_engine_scores_choices_from_the_servers_alternatives(sluice, llama_prefix,
                                                                        tmp_path):
    """--engine openai against llama-server: one token asked for with its 20
    alternatives; each choice's score is its alternative's probability over
    the choices' (here words the model ranks in its top 20 for the image,
    read first with --logprobs 20 from the same server)."""
    one = tmp_path / "in"
    one.mkdir()
    (one / sample_images()[0].name).symlink_to(sample_images()[0])
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server:
        common = ("--engine", "openai", "--endpoint", server.url, "--metrics-addr", "off",
                  "--show", 0)
        r = sluice.run("caption", one, "-o", tmp_path / "lp", *common, "--max-tokens", 1,
                       "--logprobs", 20)
        assert r.returncode == 0, r.stderr
        alts = read_rows(tmp_path / "lp")[0]["logprobs"]["content"][0]["top_logprobs"]
        texts = [bytes(a["bytes"]).decode("utf-8", "replace").strip() for a in alts]

        def alone(w):  # no other alternative reads as w or begins it
            return sum(t.lower() == w.lower() or (t and w.lower().startswith(t.lower()))
                       for t in texts) == 1

        words = [t for t in texts if t.isalpha() and t.islower() and alone(t)][:3]
        assert len(words) == 3, texts
        r = sluice.run("caption", one, "-o", tmp_path / "out", *common, "--choices",
                       ",".join(words))
        assert r.returncode == 0, r.stderr
    row = read_rows(tmp_path / "out")[0]
    scores = assert_scored(row, words)
    p = {t: math.exp(a["logprob"]) for t, a in zip(texts, alts) if t in words}
    for w in words:
        assert abs(scores[w] - p[w] / sum(p.values())) < 2e-3, (scores, p)
    assert row["caption"] == max(words, key=p.get)
    assert row["generated_tokens"] == 1 and row["finish_reason"] == "stop", row


def test_the_openai_engine_probes_where_choices_begin_alike(sluice, llama_prefix, tmp_path):
    """Choices w, "w x" and v on llama-server, where w is a first token the
    model ranks in its top 20 for the image and x one it ranks after w: the
    row's request, then a probe (the same body continuing the answer from
    w). Expected, from the server's own answers to those two bodies sent by
    this test: w takes P(w) (1 - P(x | w)), "w x" P(w) P(x | w), v P(v),
    over their sum."""
    from openai_helpers import Proxy, chat
    one = tmp_path / "in"
    one.mkdir()
    (one / sample_images()[0].name).symlink_to(sample_images()[0])
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url) as proxy:
        common = ("--engine", "openai", "--endpoint", proxy.url, "--show", 0,
                  "--max-attempts", 1)
        # A choices request's body is the same whatever the choices: read
        # it from a run whose choices the model never says.
        sluice.run("caption", one, "-o", tmp_path / "body", *common, "--choices", "qzqz,zqzq")
        body = json.loads(proxy.log[0]["body"])

        def alternatives(prefix=None):
            b = json.loads(json.dumps(body))
            if prefix is not None:
                b["messages"].append({"role": "assistant", "content": prefix})
                b["continue_final_message"] = True
                b["add_generation_prompt"] = False
            status, answer = chat(server.url, json.dumps(b).encode())
            assert status == 200, answer
            alts = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return [(bytes(a["bytes"]).decode("utf-8", "replace"), math.exp(a["logprob"]))
                    for a in alts]

        first = alternatives()
        stripped = [t.strip() for t, _ in first]

        def alone(w):  # no other alternative reads as w, begins it or is begun by it
            return sum(t.lower() == w.lower() or (t and (w.lower().startswith(t.lower()) or
                                                        t.lower().startswith(w.lower())))
                       for t in stripped) == 1

        words = [(raw, p) for (raw, p), t in zip(first, stripped)
                 if t.isalpha() and t.islower() and alone(t)]
        assert len(words) >= 2, first
        (w_raw, p_w), (v_raw, p_v) = words[0], words[1]
        w, v = w_raw.strip(), v_raw.strip()
        after = alternatives(w_raw)
        # x: a word after w that no other alternative begins (no deeper probe).
        xs = [(t, q) for t, q in after if t.startswith(" ") and t[1:].isalpha() and
              not any(u != t and len(u.strip()) and t.startswith(u) for u, _ in after)]
        assert xs, after
        x_raw, q_x = xs[0]
        wx = w + x_raw
        del proxy.log[:]
        r = sluice.run("caption", one, "-o", tmp_path / "out", *common, "--choices",
                       ",".join([w, wx, v]))
        assert r.returncode == 0, r.stderr
        sent = [json.loads(e["body"]) for e in proxy.log]
    assert len(sent) == 2, [s["messages"][-1] for s in sent]
    assert sent[1]["messages"][-1] == {"role": "assistant", "content": w_raw}
    assert sent[1]["continue_final_message"] is True
    assert probes(tmp_path / "out") == 1
    row = read_rows(tmp_path / "out")[0]
    scores = assert_scored(row, [w, wx, v])
    want = {w: p_w * (1 - q_x), wx: p_w * q_x, v: p_v}
    total = sum(want.values())
    for c in want:
        assert abs(scores[c] - want[c] / total) < 2e-3, (scores, want)
