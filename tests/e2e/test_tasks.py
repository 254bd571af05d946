"""Several tasks per image (docs/output.md "Tasks"): with the llama engine
the answers equal those of one run per task and the vision encoder runs
once per image; one row per image with each task's columns, or one row per
task (--rows-per-task), in JSONL and Parquet (read back by pyarrow); the
openai engine sends one request per task with the same image and message
prefix (llama-server: answers equal single requests); prompt templates
filled from the row's columns, a missing one failing that row alone;
resume mid-run; wrong task settings refused with exit 2."""
import json
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import SAMPLES, TINY, encodes, read_rows, sample_copies, sample_images
from openai_helpers import FakeServer, LlamaServer, completion

TASKS = {"short": "Describe this image in one sentence.",
         "colours": "List the main colours.",
         "person": "Is there a person? Answer yes or no."}
MAX = {"short": 10, "colours": 6, "person": 8}


def task_args():
    args = []
    for name, prompt in TASKS.items():
        args += ["--task", f"{name}={prompt}", "--task-max-tokens", f"{name}={MAX[name]}"]
    return args


def metric(out: pathlib.Path, name: str, **labels) -> float:
    total = 0.0
    for line in (out / "_metrics.prom").read_text().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def alone(sluice, four, tmp_path_factory):
    """Each task as a run of its own (--prompt): {task: {id: row}}, and the
    encoder calls of one such run."""
    rows, calls = {}, None
    for name, prompt in TASKS.items():
        out = tmp_path_factory.mktemp(f"alone-{name}")
        r = sluice.caption(four, out, "--prompt", prompt, "--max-tokens", MAX[name],
                           "--parallel", 1, "--show", 0, "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        rows[name] = {row["id"]: row for row in read_rows(out)}
        calls = encodes(out)
    return rows, calls


def test_tasks_answer_as_separate_runs_and_encode_each_image_once(sluice, four, alone, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(four, out, *task_args(), "--parallel", 3, "--metrics-addr", "off",
                       "--show", 1)
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    want, one_run_encodes = alone
    assert sorted(row["id"] for row in rows) == sorted(want["short"])
    for row in rows:
        assert "caption" not in row and "finish_reason" not in row
        cached = []
        for name in TASKS:
            ref = want[name][row["id"]]
            assert row[name] == ref["caption"], (row["id"], name)
            assert row[f"{name}_finish_reason"] == ref["finish_reason"]
            assert row[f"{name}_generated_tokens"] == ref["generated_tokens"]
            assert row[f"{name}_prompt_tokens"] == ref["prompt_tokens"]
            cached.append(row[f"{name}_cached_tokens"])
        # Two of the three copied the image's positions from the first.
        image_positions = want["short"][row["id"]]["prompt_tokens"] - 20
        assert sorted(cached)[1] > image_positions, cached
        assert row["generated_tokens"] == sum(row[f"{n}_generated_tokens"] for n in TASKS)
        assert row["cached_tokens"] == sum(cached)
    # The vision encoder: as often as in one single-task run, not three times.
    assert encodes(out) == one_run_encodes
    hits = metric(out, "vllm:prefix_cache_hits_total")
    assert hits >= sum(sorted(row[f"{n}_cached_tokens"] for n in TASKS)[1] for row in rows)
    assert metric(out, "sluice_task_tokens_total", task="colours", kind="generated") == \
        sum(row["colours_generated_tokens"] for row in rows)
    # The console shows each answer under its task's name; so does the report.
    assert "short: " in r.stdout and "colours: " in r.stdout
    report = (out / "_report.html").read_text()
    assert "person: " in report
    summary = json.loads((out / "_summary.json").read_text())
    names = [c["name"] for c in summary["columns"]]
    assert names[:7] == ["id", "path", "short", "short_finish_reason", "short_prompt_tokens",
                         "short_generated_tokens", "short_cached_tokens"]


def test_rows_per_task_and_parquet_read_back(sluice, four, alone, tmp_path):
    pa = pytest.importorskip("pyarrow.parquet")
    want, _ = alone
    out = tmp_path / "per-task"
    r = sluice.caption(four, out, *task_args(), "--rows-per-task", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == 4 * len(TASKS)
    for row in rows:
        assert list(row)[:4] == ["id", "path", "task", "caption"]
        assert row["caption"] == want[row["task"]][row["id"]]["caption"]

    pq_out = tmp_path / "pq"
    r = sluice.caption(four, pq_out, *task_args(), "--format", "parquet", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    table = pa.read_table(pq_out / "part-00000.parquet")
    assert table.num_rows == 4
    for row in table.to_pylist():
        for name in TASKS:
            assert row[name] == want[name][row["id"]]["caption"]
            assert row[f"{name}_generated_tokens"] == want[name][row["id"]]["generated_tokens"]
    assert str(table.schema.field("short_cached_tokens").type) == "int64"
    assert table.schema.field("short").nullable

    pq_rows = tmp_path / "pq-rows"
    r = sluice.caption(four, pq_rows, *task_args(), "--format", "parquet", "--rows-per-task",
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    t = pa.read_table(pq_rows / "part-00000.parquet").to_pylist()
    assert sorted((x["id"], x["task"]) for x in t) == sorted(
        (i, n) for i in want["short"] for n in TASKS)
    assert all(x["caption"] == want[x["task"]][x["id"]]["caption"] for x in t)


def test_tasks_file_job_file_and_wrong_settings(sluice, four, tmp_path):
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps({
        "short": {"prompt": "Describe it.", "sampling": {"max_tokens": 4}},
        "tags": {"prompt": "Tags?", "system": "You tag images.",
                 "sampling": {"max_tokens": 3, "temperature": 0.7, "seed": 5}}}))
    out = tmp_path / "out"
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("Name the main object.\n")
    r = sluice.caption(four, out, "--tasks", spec, "--task", f"obj=@{prompt_file}",
                       "--task-max-tokens", "obj=2", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert all(row["short_generated_tokens"] <= 4 and row["tags_generated_tokens"] <= 3 and
               row["obj_generated_tokens"] <= 2 for row in rows)

    # A task's json_schema is its structured output: three tokens cannot
    # close a JSON object, so each row fails as invalid output, naming it.
    spec.write_text(json.dumps({
        "short": {"prompt": "Describe it.", "sampling": {"max_tokens": 4}},
        "record": {"prompt": "JSON?", "sampling": {"max_tokens": 3},
                   "json_schema": {"type": "object"}}}))
    r = sluice.caption(four, tmp_path / "structured", "--tasks", spec, "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    rows = read_rows(tmp_path / "structured")
    assert all(", task record: " in row["error"] and row["record"] is None for row in rows)
    # Cut at the task's own limit, which the job's --max-tokens does not
    # reach: the message named --max-tokens; it names the task's.
    assert all('it was cut at the token limit (finish_reason "length"): allow the task more '
               'tokens (--task-max-tokens record=N, or "max_tokens" in its "sampling")'
               in row["error"] and "--max-tokens," not in row["error"] for row in rows), rows
    r = sluice.caption(four, tmp_path / "job-max", "--tasks", spec, "--max-tokens", "12",
                       "--metrics-addr", "off")
    assert r.returncode == 3 and all(row["record_generated_tokens"] == 3
                                     for row in read_rows(tmp_path / "job-max")), r.stderr
    r = sluice.caption(four, tmp_path / "task-max", "--tasks", spec, "--task-max-tokens",
                       "record=12", "--metrics-addr", "off")
    assert any(row["record_generated_tokens"] > 3
               for row in read_rows(tmp_path / "task-max")), r.stderr

    job = tmp_path / "job.yaml"
    job.write_text(f"""
input:
  paths: ["{four}"]
llama:
  model: "{TINY / 'model.gguf'}"
  mmproj: "{TINY / 'mmproj.gguf'}"
tasks:
  prompts: ["a=Describe it.", "b=Colours?"]
  max_tokens: ["b=3"]
  rows_per_task: true
output:
  dir: "{tmp_path / 'job-out'}"
metrics:
  addr: "off"
""")
    r = sluice.run("config", "print", job)
    assert r.returncode == 0, r.stderr
    assert '- "a=Describe it."' in r.stdout and "rows_per_task: true" in r.stdout
    printed = tmp_path / "printed.yaml"
    printed.write_text(r.stdout)
    assert sluice.run("config", "check", printed).returncode == 0
    r = sluice.run("run", job)
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "job-out")
    assert sorted({row["task"] for row in rows}) == ["a", "b"]
    assert all(row["generated_tokens"] <= 3 for row in rows if row["task"] == "b")

    def refused(*args, says):
        r = sluice.caption(four, tmp_path / "never", *args)
        assert r.returncode == 2, (args, r.stderr)
        for s in says:
            assert s in r.stderr, (s, r.stderr)
        assert not (tmp_path / "never" / "part-00000.jsonl").exists()

    refused("--task", "1bad=x", says=["--task", "1bad=x"])
    refused("--task", "noequals", says=["--task", "no '='"])
    refused("--task", "a=x", "--task-max-tokens", "b=3", says=["--task-max-tokens", "no task 'b'"])
    refused("--task", "a=x", "--task", "a=y", says=["task 'a' is given twice"])
    # a task's own setting twice: the last one won in silence
    refused("--task", "a=x", "--task-max-tokens", "a=3", "--task-temperature", "a=0.5",
            "--task-max-tokens", "a=4",
            says=["--task-max-tokens: task 'a' is given twice ('a=3', 'a=4'); keep one"])
    refused("--task", "a=x", "--task-temperature", "a=hot", says=["--task-temperature", "hot"])
    refused("--rows-per-task", says=["--rows-per-task", "needs tasks"])
    refused("--task", "model=x", says=["'model'", "choose another name"])
    # No two tasks' columns alike (task a_finish_reason's answer went in
    # task a's finish reason, and one of them was lost), nor one the column
    # sample of --samples (the answer's number was lost).
    refused("--task", "a=x", "--task", "a_finish_reason=y",
            says=["'a' and 'a_finish_reason'", "column 'a_finish_reason'", "rename one"])
    refused("--task", "sample=x", "--samples", "2", says=["'sample'", "choose another name"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": {"prompt": "x", "sampling": {"max_tokens": 0}}}')
    refused("--tasks", bad, says=[str(bad), "task 'a'", "max_tokens expects an integer from 1 to 1048576"])
    bad.write_text('{"a": {"prompt": "x", "colour": 1}}')
    refused("--tasks", bad, says=["unknown key 'colour'"])
    # "" can only be a mistake, as --system '' is (it went as an empty
    # system message).
    bad.write_text('{"a": {"prompt": "x", "system": ""}}')
    refused("--tasks", bad, says=[f"{bad}: task 'a': system is empty: give TEXT"])
    # A task's own json_schema beside its choices was called --json-schema,
    # a flag the job never had; then "task 'a': choices: ..." without the
    # file, as were its own logprobs and its choices' own mistakes (the
    # other mistakes of a tasks file name it).
    for task, said in (
            ({"choices": ["y", "n"], "json_schema": {}}, "choices and json_schema: not together"),
            ({"choices": ["y", "n"], "sampling": {"logprobs": 2}},
             "choices and sampling.logprobs: not together"),
            ({"choices": ["y", "y"]}, "choices: 'y' is given twice"),
            ({"choices": ["y", ""]}, "choices: choice 2 is empty")):
        bad.write_text(json.dumps({"a": {"prompt": "x", **task}}))
        refused("--tasks", bad, says=[f"{bad}: task 'a': {said}"])
    bad.write_text('[1, 2')
    refused("--tasks", bad, says=[str(bad), "not JSON"])
    # A task's json_schema is checked at start, as --json-schema is, not
    # by each row's request; config check says so too.
    bad.write_text(json.dumps({"a": {"prompt": "x", "json_schema": {
        "type": "object", "properties": {"n": {"type": "integr"}}, "required": ["n"]}}}))
    says = f"{bad}: task 'a': json_schema: $.properties.n.type: unknown type name"
    refused("--tasks", bad, says=[says])
    job.write_text(f"input: {{paths: [{four}]}}\nllama: {{model: {TINY / 'model.gguf'}, "
                   f"mmproj: {TINY / 'mmproj.gguf'}}}\noutput: {{dir: {tmp_path / 'never'}}}\n"
                   f"tasks: {{file: {bad}}}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and says in r.stderr, r.stderr


def test_files_opening_with_a_byte_order_mark_read_as_without(sluice, four, tmp_path):
    """Notepad saves UTF-8 with a byte order mark. A tasks file or a
    --json-schema file opening with one was refused as "not JSON ... near
    ''" (the mark invisible), and a --task NAME=@FILE prompt's went to the
    model as text. Now the mark is skipped, as a manifest's is: the file
    is read, and a task whose prompt file has the mark is fed as many
    positions as the same prompt given inline."""
    bom = b"\xef\xbb\xbf"
    spec = tmp_path / "tasks.json"
    spec.write_bytes(bom + json.dumps({"inline": {"prompt": "Describe it."}}).encode())
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_bytes(bom + b"Describe it.\n")
    out = tmp_path / "out"
    r = sluice.caption(four, out, "--tasks", spec, "--task", f"filed=@{prompt_file}",
                       "--max-tokens", "2", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == 4
    for row in rows:
        assert row["filed_prompt_tokens"] == row["inline_prompt_tokens"], row

    schema = tmp_path / "schema.json"
    schema.write_bytes(bom + b'{"type": "object"}')
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{paths: [{four}]}}\nllama: {{model: {TINY / 'model.gguf'}, "
                   f"mmproj: {TINY / 'mmproj.gguf'}}}\noutput: {{dir: {tmp_path / 'never'}}}\n")
    r = sluice.run("config", "check", job, "--json-schema", schema)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("task, said", [
    # a sampling key beside the prompt: where it goes
    ({"max_tokens": 5}, "unknown key 'max_tokens'; did you mean sampling.max_tokens "
     '("sampling": {"max_tokens": ...})? allowed: prompt,'),
    # a task's key inside sampling
    ({"sampling": {"system": "Be brief."}}, 'unknown key sampling.system (a key of the task '
     'itself: write it beside "sampling"); allowed: max_tokens,'),
    # a sampling key misspelt, or named as another tool names it
    ({"sampling": {"top-p": 0.5}}, "unknown key sampling.top-p; did you mean sampling.top_p? "
     "allowed: max_tokens,"),
    ({"sampling": {"temprature": 0.5}}, "unknown key sampling.temprature; did you mean "
     "sampling.temperature? allowed:"),
    ({"sampling": {"max_new_tokens": 5}}, "unknown key sampling.max_new_tokens; did you mean "
     "sampling.max_tokens (Hugging Face's max_new_tokens)? allowed:"),
    ({"sampling": {"n": 2}}, "unknown key sampling.n (vLLM's and OpenAI's n: sluice's is the "
     "job's sampling.samples, for every task); allowed:"),
    ({"sampling": {"guided_json": {}}}, "unknown key sampling.guided_json (vLLM's guided_json: "
     'a task\'s is "json_schema", written beside "sampling"); allowed:'),
    ({"sampling": {"zzz": 1}}, "unknown key sampling.zzz; allowed: max_tokens,"),
    # a setting vLLM has and sluice lacks: not "did you mean sampling.max_tokens?"
    ({"sampling": {"min_tokens": 5}}, "unknown key sampling.min_tokens; vLLM's min_tokens: sluice "
     "has no such setting; an answer ends at the model's end token, and --max-tokens bounds it "
     "from above only; allowed: max_tokens,"),
    # a number in quotes, or not an integer: what was given
    ({"sampling": {"max_tokens": "5"}}, "sampling.max_tokens expects an integer from 1 to 1048576, "
     'got "5" (a string: write the number without quotes)'),
    ({"sampling": {"max_tokens": 1e3}}, "sampling.max_tokens expects an integer from 1 to "
     "1048576, got 1000.0"),
    ({"sampling": {"temperature": -1}}, "sampling.temperature expects a number from 0 to 100, "
     "got -1"),
    ({"sampling": {"seed": "7"}}, "sampling.seed expects an integer from 0 to "
     '9223372036854775807, got "7" (a string'),
])
def test_a_tasks_file_key_in_the_wrong_place_or_a_quoted_number_is_named(sluice, tmp_path, task,
                                                                         said):
    """A tasks file's `"max_tokens": 5` beside the prompt was "unknown
    key" with no word of sampling; `"max_tokens": "5"` said what the key
    expects but not what was wrong with what it got."""
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "x", **task}}))
    r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o", "--model",
                   "m.gguf", "--mmproj", "p.gguf", "--tasks", tasks)
    assert r.returncode == 2, r.stderr
    assert f"sluice: {tasks}: task 'a': {said}" in r.stderr, r.stderr


def part_rows(out: pathlib.Path) -> list[dict]:
    """Every row of every committed part, JSONL or Parquet."""
    rows = []
    for part in sorted(out.glob("part-*.jsonl")):
        rows += [json.loads(x) for x in part.read_text().splitlines()]
    parquet = sorted(out.glob("part-*.parquet"))
    if parquet:
        import pyarrow.parquet as pq
        for part in parquet:
            rows += pq.read_table(part).to_pylist()
    return rows


@pytest.mark.parametrize("per_task,fmt", [(True, "jsonl"), (True, "parquet"), (False, "jsonl")])
def test_summary_counts_the_rows_the_output_holds(sluice, four, tmp_path, per_task, fmt):
    """_summary.json's rows.total/ok/failed are the rows written (with
    --rows-per-task one per image and task), failures sum to rows.failed,
    rows.inputs_done counts images; on a first run cut short by --limit and
    on the rerun that resumes it, whose resume messages count inputs as
    inputs and rows as the output holds them; a third run finds all done."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "in"
    src.mkdir()
    for p in four.iterdir():
        (src / p.name).symlink_to(p.resolve())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # fails alone, at decode
    out = tmp_path / "out"
    per = len(TASKS) if per_task else 1
    args = [*task_args(), "--format", fmt, "--shard-rows", "4", "--metrics-addr", "off",
            "--show", "0"] + (["--rows-per-task"] if per_task else [])
    seen = seen_failed = 0
    for limit in (["--limit", "2"], []):
        r = sluice.caption(src, out, *args, *limit)
        assert r.returncode in (0, 3), r.stderr
        if not limit:  # the 2 images of the first run, a row per task each; broken.jpg's
            # rows failed (it sorts first), which the line counts as rows
            assert seen_failed == per
            assert f"resuming: 2 inputs were already done by an earlier run ({seen} rows in " \
                f"the output, {seen_failed} failed: --retry-failed tries those again); they " \
                "are skipped" in r.stderr, r.stderr[-3000:]
            assert seen == 2 * per
        rows = part_rows(out)
        new = len(rows) - seen
        seen = len(rows)
        summary = json.loads((out / "_summary.json").read_text())
        counts = summary["rows"]
        assert counts["total"] == new, (counts, new)
        failed = sum(1 for row in rows if row["error"] is not None)
        seen_failed = failed
        assert counts["failed"] + counts["ok"] == counts["total"]
        assert sum(f["rows"] for f in summary["failures"]) == counts["failed"]
        assert counts["inputs_done"] * per == counts["total"]
        if per_task:  # the console's last line says what it counts
            assert f"{new} rows, one per image and task: {counts['ok']} answered, " \
                f"{counts['failed']} failed" in r.stdout, r.stdout
        if limit:
            assert counts["inputs_done"] == 2 and counts["skipped"] == 0
            first_failed = failed
        else:
            # The rerun did the rest: every input once, each a row per task.
            assert counts["skipped"] == 2 and counts["inputs_done"] == counts["input"] == 3
            assert counts["failed"] == failed - first_failed
            assert failed == per, "the broken image fails, each of its rows with the error"
            assert len(rows) == 5 * per
            ids = sorted(row["id"] for row in rows)
            assert ids == sorted([p.name for p in src.iterdir()] * per)
        # --shard-rows counts output rows too: a part is cut once it holds
        # 4, whole images in each.
        if per_task and fmt == "jsonl":
            for part in out.glob("part-*.jsonl"):
                n = len(part.read_text().splitlines())
                assert n % per == 0 and n <= 4 + per - 1, (part, n)
    r = sluice.caption(src, out, *args)
    assert r.returncode == 3, r.stderr  # broken.jpg's rows are still failed
    assert f"all inputs were already done: {out} holds their {5 * per} rows from an earlier " \
        "run (5 inputs skipped now)" in r.stdout, r.stdout + r.stderr[-3000:]
    assert f"resuming: 5 inputs were already done by an earlier run ({5 * per} rows" in r.stderr


def test_a_prompt_beside_tasks_is_refused(sluice, four, tmp_path):
    """--prompt (prompt.text) or --prompt-column beside tasks would not be
    used: exit 2 before anything runs, naming both settings, from flags, a
    job file (run and config check) and a job file under flags."""
    out = tmp_path / "never"
    r = sluice.caption(four, out, "--prompt", "Say hi.", "--task", "a=Describe it.")
    assert r.returncode == 2, r.stderr
    assert "--prompt is not used beside tasks (--task)" in r.stderr, r.stderr
    assert "Drop --prompt, or make it a task of its own" in r.stderr, r.stderr
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps({"a": {"prompt": "Describe it."}}))
    r = sluice.caption(four, out, "--prompt-column", "q", "--tasks", spec)
    assert r.returncode == 2, r.stderr
    assert "--prompt-column is not used beside tasks (--tasks)" in r.stderr, r.stderr
    assert not out.exists()

    job = tmp_path / "job.yaml"
    job.write_text(f"""input:
  paths: ["{four}"]
llama:
  model: "{TINY / 'model.gguf'}"
  mmproj: "{TINY / 'mmproj.gguf'}"
prompt:
  text: "Say hi."
tasks:
  prompts: ["a=Describe it."]
output:
  dir: "{out}"
""")
    for args in (("config", "check", job), ("run", job)):
        r = sluice.run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert f"{job}:7:9: prompt.text is not used beside tasks (tasks.prompts at {job}:9:13)" \
            in r.stderr, r.stderr
    # The job file without tasks, --task given over it: refused too.
    job.write_text(job.read_text().replace('tasks:\n  prompts: ["a=Describe it."]\n', ""))
    assert sluice.run("config", "check", job).returncode == 0
    r = sluice.run("run", job, "--task", "a=Describe it.")
    assert r.returncode == 2 and "prompt.text is not used beside tasks (--task)" in r.stderr, \
        r.stderr
    assert not out.exists()


def test_templates_fill_from_columns_and_a_missing_one_fails_its_row(sluice, tmp_path):
    """Through the openai engine and a fake server that records what it is
    sent: each task a request with the same image and message prefix, the
    prompt filled from the manifest's columns; a row without the column
    fails alone, naming it."""
    img = sample_images()[0]
    manifest = tmp_path / "list.jsonl"
    lines = [
        {"image": str(img), "id": "plain", "label": "cat", "meta": {"author": "Ann"}},
        {"image": str(img), "id": "special", "label": 'a "quoted" {brace} é\nline',
         "meta": {"author": 7}},
        {"image": str(img), "id": "missing", "meta": {"author": "Bo"}},
    ]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    bodies = []

    def answer(handler, n, body):
        bodies.append(body)
        completion(handler, text="ok " + body["messages"][-1]["content"][-1]["text"][:12])

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", manifest, "-o", out, "--engine", "openai",
                       "--endpoint", server.url, "--system", "About {label}:",
                       "--task", "a=Label {label} by {meta.author} {{x}} {not a field}",
                       "--task", "b=Just the picture.", "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr  # some rows failed
    rows = {row["id"]: row for row in read_rows(out)}
    # the system prompt is filled first, and the message says it was that one
    # (it said "in the prompt", where the task's prompt does name {label} too)
    assert rows["missing"]["error"] and \
        "no column 'label' for {label} in the system prompt" in rows["missing"]["error"]
    assert rows["missing"]["error_stage"] == "engine" and rows["missing"]["a"] is None
    assert rows["plain"]["error"] is None and rows["plain"]["b"].startswith("ok ")
    sent = {}
    for body in bodies:
        system, user = body["messages"]
        image, text = user["content"]
        sent.setdefault(system["content"], []).append((image["image_url"]["url"], text["text"]))
    assert sorted(sent) == ['About a "quoted" {brace} é\nline:', "About cat:"]
    plain = sent["About cat:"]
    assert sorted(t for _, t in plain) == ["Just the picture.",
                                           "Label cat by Ann {x} {not a field}"]
    assert plain[0][0] == plain[1][0], "the tasks of an image send the same image"
    special = sorted(t for _, t in sent['About a "quoted" {brace} é\nline:'])
    assert special[1] == 'Label a "quoted" {brace} é\nline by 7 {x} {not a field}'
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["failed"] == 1


def test_openai_tasks_equal_single_requests_to_llama_server(sluice, llama_prefix, four, tmp_path):
    with LlamaServer(llama_prefix, tmp_path / "server.log", 4) as server:
        out = tmp_path / "tasks"
        r = sluice.run("caption", four, "-o", out, "--engine", "openai", "--endpoint",
                       server.url, *task_args(), "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr
        rows = {row["id"]: row for row in read_rows(out)}
        for name, prompt in TASKS.items():
            one = tmp_path / f"one-{name}"
            r = sluice.run("caption", four, "-o", one, "--engine", "openai", "--endpoint",
                           server.url, "--prompt", prompt, "--max-tokens", MAX[name],
                           "--metrics-addr", "off")
            assert r.returncode == 0, r.stderr
            for row in read_rows(one):
                assert rows[row["id"]][name] == row["caption"], (row["id"], name)
                assert rows[row["id"]][f"{name}_generated_tokens"] == row["generated_tokens"]


def test_resume_mid_run_with_tasks(sluice, tmp_path):
    src = tmp_path / "in"
    sample_copies(src, 6)
    want = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_symlink())
    out = tmp_path / "out"
    cmd = [str(sluice.binary), "caption", str(src), "-o", str(out), "--model",
           str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"), "--task",
           "a=Describe it.", "--task", "b=Colours?", "--max-tokens", "6", "--shard-rows", "5",
           "--metrics-addr", "off", "--show", "0"]
    with open(tmp_path / "killed.log", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not list(out.glob("part-*")) and proc.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = [json.loads(x) for p in sorted(out.glob("part-*.jsonl"))
              for x in p.read_text().splitlines()]
    assert 0 < len(before) < len(want)
    assert all(row["a"] is not None and row["b"] is not None for row in before), \
        "a committed row has every task's answer"
    # Other tasks: another job, refused.
    r = subprocess.run(cmd[:-6] + ["--task", "c=Other?"] + cmd[-6:], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr, r.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for p in sorted(out.glob("part-*.jsonl"))
            for x in p.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == want
    assert all(row["error"] is None and row["a"] is not None for row in rows)


def test_openai_a_failed_task_fails_its_row_naming_the_task(sluice, tmp_path):
    """One task's request refused once (400, not retried): its row fails with
    a message naming the task; the other rows are complete."""
    from openai_helpers import reply
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_images()[:3]:
        (src / p.name).symlink_to(p)
    refusals = []

    def answer(handler, n, body):
        text = body["messages"][-1]["content"][-1]["text"]
        if text == "Refuse me." and not refusals:
            refusals.append(body)
            reply(handler, 400, json.dumps({"error": {"message": "no, not this one"}}).encode())
        else:
            completion(handler, text="fine")

    with FakeServer(answer) as server:
        out = tmp_path / "out"
        r = sluice.run("caption", src, "-o", out, "--engine", "openai", "--endpoint", server.url,
                       "--task", "a=Describe.", "--task", "b=Refuse me.", "--metrics-addr", "off")
    assert r.returncode == 3, r.stderr
    rows = read_rows(out)
    failed = [row for row in rows if row["error"]]
    assert len(failed) == 1 and len(rows) == 3
    assert ", task b: " in failed[0]["error"] and "no, not this one" in failed[0]["error"]
    assert failed[0]["a"] is None and failed[0]["b"] is None
    assert all(row["a"] == "fine" and row["b"] == "fine" for row in rows if not row["error"])


def test_openai_a_task_answer_cut_short_names_the_tasks_limit(sluice, tmp_path):
    """A task's structured answer cut at its token limit: the message says
    to raise the task's limit (--task-max-tokens NAME=N), which the job's
    --max-tokens does not reach when the task sets its own; a job's answer
    without tasks still names --max-tokens."""
    from openai_helpers import reply

    def answer(handler, n, body):
        reply(handler, 200, json.dumps({
            "id": "c", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": '{"a": '}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                      "total_tokens": 12}}).encode())

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").symlink_to(sample_images()[0])
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps({"tags": {"prompt": "JSON?", "sampling": {"max_tokens": 2},
                                         "json_schema": {"type": "object"}}}))
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    with FakeServer(answer) as server:
        common = ("--engine", "openai", "--endpoint", server.url, "--metrics-addr", "off")
        r = sluice.run("caption", src, "-o", tmp_path / "tasks", "--tasks", spec, *common)
        assert r.returncode == 3, r.stderr
        [row] = read_rows(tmp_path / "tasks")
        assert row["error"].startswith("a.jpg, task tags: the answer is not JSON: "), row
        assert ('allow the task more tokens (--task-max-tokens tags=N, or "max_tokens" in its '
                '"sampling"); the answer was: {"a": ') in row["error"], row
        r = sluice.run("caption", src, "-o", tmp_path / "job", "--json-schema", schema, *common)
        assert r.returncode == 3, r.stderr
        [row] = read_rows(tmp_path / "job")
        assert "allow more tokens (--max-tokens, or max_tokens in the request)" in row["error"], row


def test_a_max_tokens_a_choice_task_does_not_use_is_said(sluice, tmp_path):
    """A task of choices is answered at one position: its max_tokens (in
    the tasks file, or --task-max-tokens) was dropped in silence. The job
    goes on as --choices with --max-tokens does (exit 0), with a warning
    naming the task; a generating task's max_tokens, used, is not named."""
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({
        "photo": {"prompt": "A photo?", "choices": ["yes", "no"], "sampling": {"max_tokens": 5}},
        "style": {"prompt": "Style?", "choices": ["a", "b"]},
        "short": {"prompt": "Describe.", "sampling": {"max_tokens": 4}}}))
    common = [SAMPLES, "-o", tmp_path / "out", "-m", TINY / "model.gguf", "--mmproj",
              TINY / "mmproj.gguf", "--tasks", tasks]
    job = tmp_path / "job.yaml"
    job.write_text("version: 1\n")
    r = sluice.run("config", "check", job, *common, "--task-max-tokens", "style=3",
                   "--task-max-tokens", "short=3")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "does not apply" in line]
    assert len(warned) == 2, r.stderr
    assert warned[0].startswith(f"sluice: warn: {tasks}: task 'photo': sampling.max_tokens "), r.stderr
    assert warned[1].startswith("sluice: warn: --task-max-tokens 'style=3': task 'style' "), r.stderr
    assert "'short'" not in r.stderr
    # The job's own max_tokens, where every answer is a choice: said too.
    r = sluice.run("config", "check", job, *common[:7], "--choices", "a,b", "--max-tokens", "9")
    assert r.returncode == 0 and "--max-tokens does not apply with --choices" in r.stderr, r.stderr
    # So do the sampling filters and stop strings, which the choices' draw
    # does not take (vLLM's guided_choice with top_k 1 answers the most
    # likely choice; these were taken in silence); not where a task generates.
    r = sluice.run("config", "check", job, *common[:7], "--choices", "a,b", "--top-k", "1",
                   "--stop", "x", "--temperature", "1")
    assert r.returncode == 0, r.stderr
    for flag in ("--top-k", "--stop"):
        assert f"sluice: warn: {flag} does not apply with --choices: the answer is one of the " \
               "choices, picked by their scores" in r.stderr, r.stderr
    r = sluice.run("config", "check", job, *common, "--top-k", "1")
    assert r.returncode == 0 and "--top-k does not apply" not in r.stderr, r.stderr
    r = sluice.run("config", "check", job, *common, "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_system_prompt_with_fields_is_sized_by_its_own_text(sluice, tmp_path):
    """A task's system prompt holding {fields} was sized at load as the
    job's --system, which that task never sends: a long --system refused
    (exit 2, "shorten the system prompt (--system)") a job whose one task
    replaces it. Now it is sized by its own text, and a row whose field
    makes it too long for the context fails alone, naming the positions,
    as a row with a long prompt does; the other rows are answered."""
    images = sample_images()[:3]
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(
        json.dumps({"image": str(img), "id": f"r{i}", "desc": "word " * (3000 if i == 1 else 3)})
        + "\n" for i, img in enumerate(images)))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"prompt": "Describe.", "system": "Context: {desc}"}}))
    common = [manifest, "-m", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf",
              "--tasks", tasks, "--max-tokens", "4", "--metrics-addr", "off", "--show", "0"]
    out = tmp_path / "out"
    r = sluice.run("caption", "-o", out, *common, "--system", "rule " * 2100)
    assert r.returncode == 3, r.stderr  # one row failed
    rows = {row["id"]: row for row in read_rows(out)}
    assert rows["r0"]["error"] is None and rows["r2"]["error"] is None, rows
    assert "more than the model's context of 2048" in rows["r1"]["error"], rows["r1"]
    # a task that sends the job's long --system is still refused at load
    tasks.write_text(json.dumps({"a": {"prompt": "Describe."}}))
    r = sluice.run("caption", "-o", tmp_path / "never", *common, "--system", "rule " * 2100)
    assert r.returncode == 2 and "shorten the system prompt (--system)" in r.stderr, r.stderr
