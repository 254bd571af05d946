"""Structured output (--json-schema, --grammar) on both engines: the random
tiny model under a schema's grammar writes JSON of the schema (JSONL: the
value; Parquet: its text, read back by pyarrow), an answer cut short is a
failed row of class invalid_output keeping its raw text, the openai engine
sends the schema as response_format to a real llama-server, and bad files
or combinations stop at start with exit 2 naming the file and the cause."""
import json
import pathlib

import pyarrow.parquet as pq
import pytest

from conftest import SAMPLES, TINY, read_rows, sample_images
from openai_helpers import LlamaServer, Proxy, metric_sum

# Bounded everywhere, so the random model under its grammar closes the JSON
# well inside --max-tokens.
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["cat", "dog", "bird"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3},
        "caption": {"type": "string", "maxLength": 12},
    },
    "required": ["label", "count", "tags", "caption"],
    "additionalProperties": False,
}
N_SAMPLES = len(sample_images())


def matches(v) -> bool:
    """SCHEMA, checked by hand (not by sluice's checker)."""
    return (isinstance(v, dict) and set(v) == {"label", "count", "tags", "caption"}
            and v["label"] in ("cat", "dog", "bird")
            and isinstance(v["count"], int) and not isinstance(v["count"], bool)
            and 0 <= v["count"] <= 9
            and isinstance(v["tags"], list) and len(v["tags"]) <= 3
            and all(t in ("red", "blue") for t in v["tags"])
            and isinstance(v["caption"], str) and len(v["caption"]) <= 12)


def schema_file(tmp_path, schema=SCHEMA, name="schema.json"):
    path = tmp_path / name
    path.write_text(json.dumps(schema))
    return path


def test_a_schema_makes_the_random_model_write_its_json(sluice, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--json-schema", schema_file(tmp_path), "-n", "160",
                       "--temperature", "0.8", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == N_SAMPLES
    for row in rows:
        assert row["error"] is None, row["error"]
        assert isinstance(row["caption"], dict), row["caption"]  # the value, not a string
        assert matches(row["caption"]), row["caption"]
        assert row["finish_reason"] == "stop"
    # Without the schema the same model writes no JSON at all: the grammar
    # is what made the answers above.
    plain = tmp_path / "plain"
    r = sluice.caption(SAMPLES, plain, "-n", "40", "--temperature", "0.8",
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    for row in read_rows(plain):
        try:
            value = json.loads(row["caption"])
        except ValueError:
            continue
        assert not matches(value)


def test_a_number_sampled_under_the_schema_is_a_finite_double(sluice, tmp_path):
    """An unbounded "number": llama.cpp's grammar lets its exponent take 16
    digits, and the random model writes {"confidence": 2940e6316}, which no
    double holds, so the row failed "the answer is not JSON: real number
    overflow" though sampled under the schema. The exponent is held to two
    digits: every answer parses, a finite number."""
    import math
    schema = {"type": "object", "properties": {"confidence": {"type": "number"}}, "required": ["confidence"]}
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--json-schema", schema_file(tmp_path, schema), "-n", "120",
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == N_SAMPLES
    for row in rows:
        assert row["error"] is None, row["error"]
        value = row["caption"]["confidence"]
        assert isinstance(value, (int, float)) and math.isfinite(value), row["caption"]


def test_an_answer_cut_short_is_an_invalid_output_row(sluice, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--json-schema", schema_file(tmp_path), "-n", "3",
                       "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr  # the run finished; rows failed
    rows = read_rows(out)
    assert len(rows) == N_SAMPLES
    for row in rows:
        assert row["caption"] is None and row["error_stage"] == "engine"
        assert row["error"].startswith(row["id"] + ": the answer is not JSON: "), row["error"]
        raw = row["error"].split("; the answer was: ", 1)[1]
        assert raw.startswith("{") and len(raw) > 1
        assert row["finish_reason"] == "length" and row["generated_tokens"] == 3
    summary = json.loads((out / "_summary.json").read_text())
    assert {"stage": "engine", "class": "invalid_output", "rows": N_SAMPLES} in summary["failures"]
    prom = (out / "_metrics.prom").read_text()
    assert metric_sum(prom, "sluice_rows_failed_by_class_total", stage="engine",
                      **{"class": "invalid_output"}) == N_SAMPLES


def test_parquet_holds_the_json_text(sluice, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--json-schema", schema_file(tmp_path), "-n", "160",
                       "--format", "parquet", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out / "part-00000.parquet")
    assert str(table.schema.field("caption").type) == "string"
    captions = table.column("caption").to_pylist()
    assert len(captions) == N_SAMPLES
    assert all(matches(json.loads(c)) for c in captions), captions


def test_a_grammar_file_constrains_the_llama_engine(sluice, tmp_path):
    gbnf = tmp_path / "answer.gbnf"
    gbnf.write_text('root ::= ("yes" | "no") "." \n')
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--grammar", gbnf, "-n", "8", "--temperature", "1",
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    captions = {row["caption"] for row in read_rows(out)}
    assert captions <= {"yes.", "no."} and captions, captions


def test_a_bad_grammar_is_one_message_naming_the_file_and_the_cause(sluice, tmp_path):
    """llama.cpp's grammar parser prints its reason and the whole grammar on
    stderr itself ("parse: error parsing grammar: ...", then "failed to
    parse grammar" by its log) before our message, which said only "its
    reason is printed above". Now one line naming the file and the cause,
    for a job file's key too (config check)."""
    for text, cause in (('root ::= foo\n', "Undefined rule identifier 'foo'"),
                        ('roo ::= "x"\n', "grammar does not contain a 'root' symbol"),
                        ('root ::= ("yes" \n', "expecting ')' at the end of a line")):
        gbnf = tmp_path / "bad.gbnf"
        gbnf.write_text(text)
        r = sluice.caption(SAMPLES, tmp_path / "out", "--grammar", gbnf, "--metrics-addr", "off")
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [
            f"sluice: --grammar '{gbnf}': llama.cpp cannot parse it as a GBNF grammar with a "
            f"root rule: {cause} (token references <[id]> are not accepted here)"], r.stderr
        job = tmp_path / "job.yaml"
        job.write_text(f"sampling:\n  grammar: {gbnf}\n")
        r = sluice.run("config", "check", job)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert f"{cause} (token" in r.stderr, r.stderr


def test_bad_files_and_combinations_stop_at_start(sluice, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"type": "object",')
    bad_type = schema_file(tmp_path, {"properties": {"a": {"type": "str"}}}, "type.json")
    bad_gbnf = tmp_path / "bad.gbnf"
    bad_gbnf.write_text("root ::= (\"yes\" \n")
    good_gbnf = tmp_path / "good.gbnf"
    good_gbnf.write_text('root ::= "x"\n')
    # llama.cpp's converter makes a wrong grammar of a property named ""
    # (the answer was the property's bare value): refused, naming the file
    # and where in it.
    empty = schema_file(tmp_path, {"type": "object", "properties": {
        "": {"type": "integer"}, "b": {"type": "string"}}, "required": ["b"]}, "empty.json")
    nested = schema_file(tmp_path, {"type": "object", "properties": {"box": {
        "type": "object", "properties": {"": {"type": "integer"}}}}}, "nested.json")
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "x", "json_schema": json.loads(empty.read_text())}}))
    schema_task = tmp_path / "schema_task.json"
    schema_task.write_text(json.dumps({"a": {"prompt": "x", "json_schema": SCHEMA}}))
    cases = [
        (("--json-schema", empty), [f'--json-schema \'{empty}\': $.properties has a property named ""']),
        (("--json-schema", nested),
         [f'--json-schema \'{nested}\': $.properties.box.properties has a property named ""']),
        (("--tasks", tasks), [f"{tasks}: task 'a': json_schema: $.properties has a property named \"\""]),
        (("--json-schema", bad_json), [f"--json-schema '{bad_json}' is not JSON"]),
        (("--json-schema", bad_type),
         [f"--json-schema '{bad_type}': $.properties.a.type: unknown type name"]),
        (("--json-schema", tmp_path / "missing.json"), ["missing.json", "No such file"]),
        (("--grammar", bad_gbnf), [f"--grammar '{bad_gbnf}': llama.cpp cannot parse it"]),
        # A stop string can be in any JSON answer: --stop '"' failed every
        # row as invalid_output; a task's schema, or the job's under tasks,
        # is named.
        (("--json-schema", schema_file(tmp_path), "--stop", '"'),
         ["--stop with --json-schema: a stop string can end the answer inside its JSON",
          "drop --stop"]),
        (("--tasks", schema_task, "--stop", "\n"),
         ["--stop with the json_schema of task 'a': a stop string"]),
        (("--task", "b=x", "--json-schema", schema_file(tmp_path), "--stop", "}"),
         ["--stop with --json-schema (task 'b'): a stop string"]),
        (("--engine", "openai", "--endpoint", "http://127.0.0.1:9", "--grammar", good_gbnf),
         ["--grammar is for the llama engine"]),
        (("--engine", "openai", "--endpoint", "http://127.0.0.1:9", "--json-schema",
          schema_file(tmp_path), "--response-format", schema_file(tmp_path)),
         ["--json-schema and --response-format both set"]),
    ]
    for flags, words in cases:
        r = sluice.caption(SAMPLES, tmp_path / "out", *flags, "--metrics-addr", "off")
        assert r.returncode == 2, (flags, r.stderr)
        for w in words:
            assert w in r.stderr, (flags, r.stderr)
        assert not (tmp_path / "out").exists()
    # A job file's key: the same check, named by the file's line.
    job = tmp_path / "job.yaml"
    job.write_text(f"sampling:\n  json_schema: {bad_type}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and "job.yaml:2:16: sampling.json_schema" in r.stderr, r.stderr


def cut_short_with_siblings(run, tmp_path, how):
    """Rows of two tasks (one under SCHEMA, cut short at 3 tokens: refused)
    or of two --samples under SCHEMA, on `run` (the engine's flags given);
    each row failed as invalid_output, with every answer's finish reason
    and tokens kept (they were 0 and null, the answers dropped), as a row
    of one answer keeps them; no answer's text is written."""
    out = tmp_path / "out"
    if how == "tasks":
        tasks = tmp_path / "tasks.json"
        tasks.write_text(json.dumps({"obj": {"prompt": "Describe it as JSON.", "json_schema": SCHEMA},
                                     "plain": {"prompt": "Say hi."}}))
        flags = ["--tasks", tasks]
    else:
        flags = ["--json-schema", schema_file(tmp_path), "--samples", "2"]
    r = run(out, *flags, "-n", "3", "--limit", "2", "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    rows = read_rows(out)
    assert rows and all(row["error_stage"] == "engine" and "the answer is not JSON" in row["error"]
                        for row in rows), rows
    if how == "tasks":
        assert len(rows) == 2
        for row in rows:
            assert row["obj"] is None and row["plain"] is None, row
            assert row["obj_finish_reason"] == "length" and row["obj_generated_tokens"] == 3, row
            assert row["plain_finish_reason"] in ("stop", "length"), row
            assert 0 < row["plain_generated_tokens"] <= 3 and row["plain_prompt_tokens"] > 0, row
            assert row["generated_tokens"] == 3 + row["plain_generated_tokens"], row
    else:
        assert len(rows) == 4 and sorted(row["sample"] for row in rows) == [0, 0, 1, 1]
        for row in rows:
            assert row["caption"] is None, row
            assert row["finish_reason"] == "length" and row["generated_tokens"] == 3, row
            assert row["prompt_tokens"] > 0, row


@pytest.mark.parametrize("how", ["tasks", "samples"])
def test_a_refused_answer_among_tasks_or_samples_keeps_every_answers_counts(sluice, tmp_path, how):
    cut_short_with_siblings(lambda out, *flags: sluice.caption(SAMPLES, out, *flags), tmp_path, how)


def test_a_refused_answer_among_tasks_keeps_their_counts_on_the_openai_engine(sluice, llama_prefix,
                                                                             tmp_path):
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server:
        cut_short_with_siblings(
            lambda out, *flags: sluice.run("caption", SAMPLES, "-o", out, "--engine", "openai",
                                           "--endpoint", server.url, *flags),
            tmp_path, "tasks")


def test_the_openai_engine_sends_the_schema_and_checks_the_answers(sluice, llama_prefix,
                                                                  tmp_path):
    out = tmp_path / "out"
    with LlamaServer(llama_prefix, tmp_path / "server.log", 2) as server, \
            Proxy(server.url) as proxy:
        r = sluice.run("caption", SAMPLES, "-o", out, "--engine", "openai", "--endpoint",
                       proxy.url, "--json-schema", schema_file(tmp_path), "-n", "160",
                       "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        bodies = [json.loads(e["body"]) for e in proxy.log if e.get("body")]
    sent = [b["response_format"] for b in bodies if "messages" in b]
    assert len(sent) == N_SAMPLES
    assert all(f == {"type": "json_schema",
                     "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
               for f in sent), sent[0]
    rows = read_rows(out)
    assert len(rows) == N_SAMPLES
    assert all(row["error"] is None and matches(row["caption"]) for row in rows), rows[0]


def test_a_long_invalid_answer_is_kept_whole_in_the_error(sluice, tmp_path):
    # The grammar wins over the schema on the llama engine, and the schema
    # still checks: 1,500 characters of "x" are no JSON.
    gbnf = tmp_path / "long.gbnf"
    gbnf.write_text('root ::= "x"{1500}\n')
    out = tmp_path / "out"
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.jpg").symlink_to(sample_images()[0])
    r = sluice.caption(one, out, "--grammar", gbnf, "--json-schema", schema_file(tmp_path),
                       "-n", "1600", "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    [row] = read_rows(out)
    assert row["error"].endswith("; the answer was: " + "x" * 1500), row["error"][-80:]
    assert row["caption"] is None and row["finish_reason"] == "stop"


# Every kind of column --answer-columns types.
FIELDS = {
    "type": "object",
    "properties": {
        "label": {"enum": ["cat", "dog", "bird"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "ok": {"type": "boolean"},
        "weight": {"enum": [0.25, 1.5]},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3},
        "box": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9},
                                                 "hits": {"type": "array", "items": {"type": "boolean"},
                                                          "maxItems": 2}},
                "required": ["x", "hits"], "additionalProperties": False},
    },
    "required": ["label", "count", "ok", "weight", "tags", "box"],
    "additionalProperties": False,
}


def test_answer_columns_hold_each_property_typed(sluice, tmp_path):
    """--answer-columns: each property of the schema's answers in a column
    of its own, typed from the schema in Parquet (DuckDB reads VARCHAR,
    BIGINT, BOOLEAN, DOUBLE, a list and a struct holding a list), a JSON value
    in JSONL, equal to the answer's; with tasks, NAME_PROPERTY for the task
    with a schema; a property named like one of the output's columns, no
    schema, or --samples stop the job at start (exit 2)."""
    import duckdb
    schema = schema_file(tmp_path, FIELDS)
    common = ("--json-schema", schema, "--answer-columns", "--max-tokens", 240,
              "--show", 0, "--metrics-addr", "off")
    r = sluice.caption(SAMPLES, tmp_path / "pq", *common, "--format", "parquet")
    assert r.returncode == 0, r.stderr
    part = str(tmp_path / "pq" / "part-00000.parquet")
    types = {row[0]: row[1] for row in duckdb.sql(f"describe select * from '{part}'").fetchall()}
    assert [types[c] for c in ("label", "count", "ok", "weight", "tags", "box")] == [
        "VARCHAR", "BIGINT", "BOOLEAN", "DOUBLE", "VARCHAR[]", "STRUCT(x BIGINT, hits BOOLEAN[])"], types
    rows = duckdb.sql(f"select caption, label, count, ok, weight, tags, box from '{part}' "
                      "where error is null").fetchall()
    assert len(rows) == N_SAMPLES
    for caption, label, count, ok, weight, tags, box in rows:
        want = json.loads(caption)
        assert (label, count, ok, weight, tags, box) == (
            want["label"], want["count"], want["ok"], want["weight"], want["tags"], want["box"])
    assert duckdb.sql(f"select count(*) from '{part}' where len(box.hits) <= 2 and box.x between 0 and 9"
                      ).fetchall()[0][0] == N_SAMPLES
    assert duckdb.sql(f"select count(*) from '{part}' where count between 0 and 9"
                      ).fetchall()[0][0] == N_SAMPLES

    r = sluice.caption(SAMPLES, tmp_path / "jsonl", *common)
    assert r.returncode == 0, r.stderr
    for row in read_rows(tmp_path / "jsonl"):
        for k in FIELDS["properties"]:
            assert row[k] == row["caption"][k], row

    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"short": {"prompt": "Describe.", "sampling": {"max_tokens": 4}},
                                 "fields": {"prompt": "Fill in.", "json_schema": FIELDS,
                                            "sampling": {"max_tokens": 240}}}))
    r = sluice.caption(SAMPLES, tmp_path / "tasks", "--tasks", tasks, "--answer-columns",
                       "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    for row in read_rows(tmp_path / "tasks"):
        assert "label" not in row and "short_label" not in row
        for k in FIELDS["properties"]:
            assert row[f"fields_{k}"] == row["fields"][k], row

    clash = schema_file(tmp_path, SCHEMA, "clash.json")  # has a property "caption"
    r = sluice.caption(SAMPLES, tmp_path / "clash", "--json-schema", clash, "--answer-columns")
    assert r.returncode == 2 and "property 'caption'" in r.stderr, r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "none", "--answer-columns")
    assert r.returncode == 2 and "needs --json-schema" in r.stderr, r.stderr
    job = tmp_path / "job.yaml"  # config check refuses it as the run would
    job.write_text(f"input: {{paths: [{SAMPLES}]}}\nllama: {{model: {TINY / 'model.gguf'}, "
                   f"mmproj: {TINY / 'mmproj.gguf'}}}\n"
                   f"output: {{dir: {tmp_path / 'c'}, answer_columns: true}}\n")
    r = sluice.run("config", "check", job)  # in the job file's terms, at its line
    assert r.returncode == 2 and f"{job}:3:" in r.stderr and \
        "output.answer_columns needs sampling.json_schema" in r.stderr, r.stderr

    # Several output rows an input: each row's columns are its answers'.
    r = sluice.caption(SAMPLES, tmp_path / "n", *common, "--samples", "2", "--temperature", "1")
    assert r.returncode == 0, r.stderr
    rows = [row for row in read_rows(tmp_path / "n") if row["error"] is None]
    assert len(rows) >= N_SAMPLES
    assert any(row["sample"] == 1 for row in rows)
    for row in rows:
        for k in FIELDS["properties"]:
            assert row[k] == row["caption"][k], row
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "per", "--model", TINY / "model.gguf",
                   "--mmproj", TINY / "mmproj.gguf", "--tasks", tasks, "--answer-columns",
                   "--rows-per-task", "--samples", "2", "--temperature", "1", "--show", 0,
                   "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    per = read_rows(tmp_path / "per")
    assert len(per) == 4 * N_SAMPLES
    for row in per:
        if row["task"] == "fields" and row["error"] is None:
            fields = json.loads(row["caption"]) if isinstance(row["caption"], str) \
                else row["caption"]
            for k in FIELDS["properties"]:
                assert row[f"fields_{k}"] == fields[k], row
        else:
            assert all(row.get(f"fields_{k}") is None for k in FIELDS["properties"]), row


def test_the_fields_example_writes_typed_columns(sluice, four, tmp_path, monkeypatch):
    """examples/fields.yaml (its schema file, output.answer_columns) on the
    tiny model: DuckDB groups and filters on the typed columns directly."""
    import duckdb
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "fields.yaml"
    monkeypatch.chdir(example.parents[1])  # its schema's path is the repository's
    out = tmp_path / "out"
    r = sluice.run("run", example, four, "-o", out, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "--show", 0, "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = duckdb.sql(f"SELECT caption, subject, people, outdoor, style, colors "
                      f"FROM '{out}/*.parquet'").fetchall()
    assert len(rows) == 4
    for caption, subject, people, outdoor, style, colors in rows:
        want = json.loads(caption)
        assert (subject, people, outdoor, style, colors) == (
            want["subject"], want["people"], want["outdoor"], want["style"], want["colors"])
    by_style = duckdb.sql(f"SELECT style, count(*), sum(people) FROM '{out}/*.parquet' "
                          "WHERE people >= 0 GROUP BY style").fetchall()
    assert sum(n for _, n, _ in by_style) == 4
    assert sum(total for _, _, total in by_style) == sum(r[2] for r in rows)


def test_answer_columns_leave_an_input_column_of_their_name(sluice, tmp_path):
    """An input column named like an answer column passes as input_<name>
    (input_ again while the input has that too), as one named like a
    sluice field does: in JSONL and Parquet (typed as the input's), for a
    row that failed before the engine, and when --columns declares it."""
    import duckdb
    schema = schema_file(tmp_path, {"type": "object",
                                    "properties": {"label": {"type": "integer", "minimum": 0,
                                                             "maximum": 99}},
                                    "required": ["label"], "additionalProperties": False})
    images = sample_images()
    manifest = tmp_path / "m.jsonl"
    rows = [{"image": str(p), "label": f"L_{p.stem}", "input_label": 7} for p in images]
    rows.append({"image": str(tmp_path / "missing.jpg"), "label": "L_missing", "input_label": 7})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("--json-schema", schema, "--answer-columns", "--max-tokens", 40, "--show", 0,
              "--metrics-addr", "off")

    def check(out, got):
        assert len(got) == len(rows)
        for row in got:
            stem = pathlib.Path(row["path"]).stem
            assert row["input_input_label"] == f"L_{stem}", row
            assert row["input_label"] == 7, row
            want = json.loads(row["caption"]) if isinstance(row["caption"], str) else row["caption"]
            assert row.get("label") == (want["label"] if row["error"] is None else None), row
        assert sum(row["error"] is None for row in got) == len(images)

    r = sluice.caption(manifest, tmp_path / "jsonl", *common)
    assert r.returncode == 3, r.stderr  # the missing image
    check(tmp_path / "jsonl", read_rows(tmp_path / "jsonl"))

    r = sluice.caption(manifest, tmp_path / "pq", *common, "--format", "parquet")
    assert r.returncode == 3, r.stderr  # the missing image
    part = str(tmp_path / "pq" / "part-00000.parquet")
    types = {row[0]: row[1] for row in duckdb.sql(f"describe select * from '{part}'").fetchall()}
    assert (types["label"], types["input_input_label"], types["input_label"]) == (
        "BIGINT", "VARCHAR", "BIGINT"), types
    check(tmp_path / "pq", pq.read_table(part).to_pylist())

    manifest.write_text("".join(json.dumps({"image": r["image"], "label": r["label"]}) + "\n"
                                for r in rows))
    r = sluice.caption(manifest, tmp_path / "declared", *common, "--columns", "label")
    assert r.returncode == 3, r.stderr  # the missing image
    for row in read_rows(tmp_path / "declared"):
        assert row["input_label"] == f"L_{pathlib.Path(row['path']).stem}", row
        assert ("label" in row) == (row["error"] is None) and "input_input_label" not in row, row
