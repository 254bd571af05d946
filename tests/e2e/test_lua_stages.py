"""User stages in Lua end to end (docs/stages.md): the two examples run as
job files on the tiny model — examples/dedup.yaml drops exact and near
duplicates (re-encoded, resized, converted copies) and keeps the rest, the
dropped rows done for the rerun; examples/tags.yaml writes the tag rule's
tags (JSONL and Parquet) and drops short answers — and a script that does
not compile stops the command with exit 2 naming file:line, while a script
that fails on a row fails only that row, with its script:line (the traceback
in the log, -v), its stage and the class "stage"."""
import json
import re
import shutil

import pytest

from conftest import REPO, SAMPLES, TINY, read_rows, sample_copies

pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

MODEL = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")


def run_example(sluice, name, inputs, out, *extra):
    check = sluice.run("config", "check", REPO / "examples" / name)
    assert check.returncode == 0, check.stderr
    return sluice.run("run", REPO / "examples" / name, inputs, *MODEL, "-o", out,
                      "--metrics-addr", "127.0.0.1:0", "--max-tokens", "8", "--show", "0",
                      *extra)


# --- dedup -------------------------------------------------------------------------

ORIGINALS = ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg", "hubble.jpg",
             "rocket.jpg"]


def dedup_inputs(root):
    """a/: the six samples; b/: copies of them (the same bytes, another
    format, grey, rotated by EXIF, re-encoded, resized) and one picture that
    only looks related (hubble mirrored). Folders are read in name order, so
    every original comes before its copies."""
    a, b = root / "a", root / "b"
    a.mkdir(parents=True)
    b.mkdir()
    for name in ORIGINALS:
        shutil.copy(SAMPLES / name, a / name)
    shutil.copy(SAMPLES / "astronaut.jpg", b / "astronaut_same_bytes.jpg")
    for v in ["astronaut.png", "camera_gray.png", "chelsea_exif_orient6.jpg",
              "coffee_1600.jpg", "rocket.webp", "rocket_progressive.jpg"]:
        shutil.copy(SAMPLES / "variants" / v, b / v)
    hubble = Image.open(SAMPLES / "hubble.jpg").convert("RGB")
    hubble.save(b / "hubble_q30.jpg", quality=30)
    hubble.resize((hubble.width // 2, hubble.height // 2)).save(b / "hubble_half.png")
    hubble.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b / "hubble_mirrored.jpg")
    return [f"a/{n}" for n in ORIGINALS] + ["b/hubble_mirrored.jpg"], 9


def test_dedup_keeps_one_of_each_picture_and_the_rerun_writes_nothing(sluice, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(REPO)  # the example's paths are relative to the repository
    inputs = tmp_path / "in"
    kept, n_dropped = dedup_inputs(inputs)
    out = tmp_path / "out"
    r = run_example(sluice, "dedup.yaml", inputs, out)
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert sorted(row["id"] for row in rows) == sorted(kept)
    assert all(row["error"] is None for row in rows)
    assert all(re.fullmatch(r"[0-9a-f]{16}", row["dhash"]) for row in rows)
    assert len({row["dhash"] for row in rows}) == len(kept)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["dropped"] == n_dropped, summary["rows"]
    # docs/stages.md: the stage that dropped them says so in its own entry
    by_name = {stage["name"]: stage for stage in summary["stages"]}
    assert by_name["dedup"]["rows_dropped"] == n_dropped, summary["stages"]
    assert by_name["decode"]["rows_dropped"] == 0, summary["stages"]

    # The rerun: everything is done, the dropped copies too.
    parts = sorted(p.name for p in out.glob("part-*"))
    r = run_example(sluice, "dedup.yaml", inputs, out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("part-*")) == parts
    assert len(read_rows(out)) == len(kept)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["total"] == 0, summary["rows"]
    assert summary["rows"]["skipped"] == len(kept) + n_dropped, summary["rows"]


# --- tags --------------------------------------------------------------------------

def stopwords():
    words = set()
    for line in (REPO / "examples" / "stopwords.txt").read_text().splitlines():
        word = line.split("#", 1)[0].strip().lower()
        if word:
            words.add(word)
    return words


def tag_rule(text, stop):
    """docs/stages.md, "The tag rule"."""
    tags = []
    for word in re.split(r"[^0-9a-z]+", text.encode().lower().decode("ascii", "replace")):
        if len(word) >= 3 and word not in stop and word not in tags:
            tags.append(word)
            if len(tags) == 16:
                break
    return tags


def tags_job(tmp_path, fmt, min_length):
    """examples/tags.yaml with another min_length and format, one sequence at
    a time (the same captions on every run)."""
    text = (REPO / "examples" / "tags.yaml").read_text()
    text = text.replace("min_length: 20", f"min_length: {min_length}")
    text = text.replace("format: parquet", f"format: {fmt}")
    text = text.replace("parallel: 4", "parallel: 1")
    job = tmp_path / f"tags-{fmt}-{min_length}.yaml"
    job.write_text(text)
    return job


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_tags_from_answers_and_short_answers_dropped(sluice, tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(REPO)  # the example's paths are relative to the repository
    # Every answer first (min_length 0 drops nothing).
    all_out = tmp_path / "all"
    r = sluice.run("run", tags_job(tmp_path, "jsonl", 0), SAMPLES, *MODEL, "-o", all_out,
                   "--metrics-addr", "off", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    answers = {row["id"]: row["caption"] for row in read_rows(all_out)}
    lengths = sorted(len(a) for a in answers.values())
    assert lengths[0] < lengths[-1], "the tiny model gave answers of one length"
    min_length = lengths[len(lengths) // 2]

    out = tmp_path / "out"
    r = sluice.run("run", tags_job(tmp_path, fmt, min_length), SAMPLES, *MODEL, "-o", out,
                   "--metrics-addr", "off", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    if fmt == "parquet":
        table = pq.read_table(out / "part-00000.parquet")
        assert "tags" in table.column_names
        rows = table.to_pylist()
        for row in rows:  # a string column: JSON text
            row["tags"] = json.loads(row["tags"])
    else:
        rows = read_rows(out)
    stop = stopwords()
    want = {i for i, a in answers.items() if len(a) >= min_length}
    assert {row["id"] for row in rows} == want
    assert 0 < len(want) < len(answers)
    for row in rows:
        assert row["caption"] == answers[row["id"]]
        assert row["tags"] == tag_rule(row["caption"], stop), row
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["dropped"] == len(answers) - len(want)


def test_tag_rule_cases(sluice, tmp_path):
    """The rule on made-up answers: a stage after the engine sets them and
    hands the row to examples/tags.lua's own process() (loaded in an
    environment of its own)."""
    driver = tmp_path / "driver.lua"
    driver.write_text(f"""
local tags_process
function init(config)
  local env = setmetatable({{}}, {{__index = _G}})
  local chunk = assert(loadfile({json.dumps(str(REPO / "examples" / "tags.lua"))}, "t", env))
  chunk()
  env.init({{stopwords = {json.dumps(str(REPO / "examples" / "stopwords.txt"))}}})
  tags_process = env.process
end
local texts = {{
  ["one"] = "The CAT and the cat; a dog-house, 2024 x9 ab abc",
  ["two"] = "Ünïcödé café naïve résumé",
  ["three"] = "w1 w2 w3 aaa bbb ccc ddd eee fff ggg hhh iii jjj kkk lll mmm nnn ooo ppp qqq rrr",
}}
function process(row)
  local key = ({{"one", "two", "three"}})[(#row.id % 3) + 1]
  row.answer = texts[key]
  row.columns.text = texts[key]
  return tags_process(row)
end
""")
    out = tmp_path / "out"
    r = sluice.run("caption", SAMPLES, *MODEL, "-o", out, "--metrics-addr", "off",
                   "--max-tokens", "1", "--stage",
                   json.dumps({"lua": str(driver), "after": "engine", "columns": ["tags", "text"]}))
    assert r.returncode == 0, r.stderr
    stop = stopwords()
    rows = read_rows(out)
    assert rows
    for row in rows:
        assert row["caption"] == row["text"]
        assert row["tags"] == tag_rule(row["text"], stop), row
    expected = {
        "The CAT and the cat; a dog-house, 2024 x9 ab abc": ["cat", "dog", "house", "2024", "abc"],
        "Ünïcödé café naïve résumé": ["caf", "sum"],
    }
    for row in rows:
        if row["text"] in expected:
            assert row["tags"] == expected[row["text"]]
        elif row["text"].startswith("w1"):
            assert len(row["tags"]) == 16 and row["tags"][0] == "aaa"


# --- errors ------------------------------------------------------------------------

def test_a_script_that_does_not_compile_is_exit_2_naming_file_and_line(sluice, tmp_path):
    bad = tmp_path / "bad.lua"
    bad.write_text("function process(row)\n  return row\nedn\n")
    r = sluice.caption(SAMPLES, tmp_path / "out", "--stage", f"{bad}@engine")
    assert r.returncode == 2, r.stderr
    assert f"{bad}:3:" in r.stderr, r.stderr
    assert not (tmp_path / "out" / "part-00000.jsonl").exists()
    none = tmp_path / "none.lua"
    none.write_text("function handle(row) return row end\n")
    r = sluice.caption(SAMPLES, tmp_path / "out", "--stage", str(none))
    assert r.returncode == 2 and "defines no function process(row)" in r.stderr, r.stderr
    # config check finds it too, without running anything.
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{paths: [{SAMPLES}]}}\noutput: {{dir: {tmp_path / 'o2'}}}\n"
                   f"llama: {{model: m.gguf, mmproj: p.gguf}}\n"
                   f"pipeline: {{stages: [{{lua: {bad}, after: engine}}]}}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and f"{bad}:3:" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "o2").exists()


def test_an_init_that_fails_names_its_stage_once(sluice, tmp_path):
    """A stage whose init() raises stops the run (exit 2) with the stage,
    the worker and the script's line; the message named the stage twice
    ("stage 'initfail' could not start: stage 'initfail': init() ...")."""
    script = tmp_path / "initfail.lua"
    script.write_text("function init()\n  error('no labels file')\nend\n"
                      "function process(row) return row end\n")
    r = sluice.caption(SAMPLES, tmp_path / "out", "--dry-run", "--stage", str(script))
    assert r.returncode == 2, r.stderr
    said = f"stage 'initfail' could not start: init() failed on worker 0: {script}:2: no labels file"
    assert said in r.stderr, r.stderr
    assert r.stderr.count("'initfail'") == 1, r.stderr


def flagged_list(tmp_path):
    """A stage that sets a column, a manifest of the sample JPEGs by name
    (read under --image-root) and the ids its rows get."""
    flag = tmp_path / "flag.lua"
    flag.write_text("function process(row) row.columns.flag = 'v1' return row end\n")
    listed = tmp_path / "list.jsonl"
    names = sorted(p.name for p in SAMPLES.glob("*.jpg"))
    listed.write_text("".join(json.dumps({"image": n}) + "\n" for n in names))
    return flag, listed, [f"list.jsonl:{i + 1}" for i in range(len(names))]


def test_stages_and_the_image_root_are_part_of_the_job(sluice, tmp_path):
    """A rerun that adds, drops or moves a stage, or reads images under
    another --image-root, would write rows of another job beside the
    first's (a column more, other images under the same ids): it was taken
    in silence, and is now refused naming the setting. A script whose text
    changed (a fix) goes on, and so does the same command."""
    flag, listed, want = flagged_list(tmp_path)
    out = tmp_path / "out"
    other_root = tmp_path / "elsewhere"
    shutil.copytree(SAMPLES, other_root)

    def run(root, *stage, limit=("--limit", "2")):
        return sluice.caption(listed, out, "--dry-run", "--image-root", root, "--metrics-addr",
                              "off", *limit, *stage)

    r = run(SAMPLES, "--stage", flag)
    assert r.returncode == 0, r.stderr
    for root, stage, said in ((SAMPLES, (), "stages"),
                              (SAMPLES, ("--stage", f"{flag}@read"), "stages"),
                              (other_root, ("--stage", flag), "image_root")):
        r = run(root, *stage)
        assert r.returncode == 2, (root, stage, r.stderr)
        assert said in r.stderr and "--overwrite" in r.stderr, (root, stage, r.stderr)
    flag.write_text("function process(row) row.columns.flag = 'v1' -- fixed\n return row end\n")
    r = run(SAMPLES, "--stage", flag, limit=())
    assert r.returncode == 0, r.stderr
    ids = [json.loads(line)["id"] for part in sorted(out.glob("part-*.jsonl"))
           for line in part.read_text().splitlines()]
    assert sorted(ids) == want, ids


def as_an_older_sluice_wrote(out, keys) -> str:
    """The ledger's fingerprint without the lines of `keys` (prefixes), as
    a sluice before them wrote it; returns the fingerprint it had."""
    import sqlite3
    db = sqlite3.connect(out / "_sluice_ledger.sqlite")
    (fp,), = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'")
    older = "".join(line + "\n" for line in fp.splitlines() if not line.startswith(keys))
    assert older != fp, fp
    db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (older,))
    db.commit()
    db.close()
    return fp


def output_ids(out) -> list[str]:
    return sorted(json.loads(line)["id"] for part in sorted(out.glob("part-*.jsonl"))
                  for line in part.read_text().splitlines())


def test_a_folder_without_stages_is_refused_a_stage_on_every_engine(sluice, tmp_path):
    """A folder written without a stage, resumed with one, would hold rows
    with and without its column: refused naming stages. The llama engine's
    folders were; a --dry-run's (as an openai job's: neither fingerprint
    has the KV cache types that told a folder of today from an older
    sluice's) matched the older form without stages and took the stage
    (compat21's finding). A folder of the sluice before fingerprint_form
    (the key taken out) still resumes with the same command."""
    flag, _, _ = flagged_list(tmp_path)
    out = tmp_path / "out"
    want = sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.jpg"))

    def run(*extra):  # (no --image-root: the form before stages lacks it too)
        return sluice.caption(SAMPLES, out, "--dry-run", "--include", "*.jpg", "--metrics-addr",
                              "off", *extra)

    assert run("--limit", "2").returncode == 0
    r = run("--stage", flag)
    assert r.returncode == 2, r.stderr
    assert "(stages changed since)" in r.stderr, r.stderr
    fp = as_an_older_sluice_wrote(out, ("fingerprint_form\t",))
    assert fp.splitlines().count("fingerprint_form\t1") == 1, fp
    r = run()
    assert r.returncode == 0, r.stderr
    assert output_ids(out) == want


def test_a_folder_written_before_stages_were_in_the_fingerprint_resumes(sluice, tmp_path):
    """A folder written with stages and --image-root by a sluice whose
    fingerprint held neither goes on with the same command (compared as it
    was), not refused for keys it never had."""
    flag, listed, want = flagged_list(tmp_path)
    out = tmp_path / "out"

    def run(*limit):
        return sluice.caption(listed, out, "--dry-run", "--image-root", SAMPLES, "--metrics-addr",
                              "off", "--stage", flag, *limit)

    assert run("--limit", "2").returncode == 0
    fp = as_an_older_sluice_wrote(out, ("stages\t", "image_root\t", "fingerprint_form\t"))
    assert "\nstages\t" in fp and "\nimage_root\t" in fp, fp
    r = run()
    assert r.returncode == 0, r.stderr
    assert output_ids(out) == want


def camera_rows_fail(sluice, tmp_path, name, camera_line, more_yaml="", flags=(), log=None):
    """A stage `name` after read whose process() runs `camera_line` for the
    rows with "camera" in their id, on the samples: (the script, the rows
    that failed, the output folder); only those rows failed and the run went
    on (exit 3). `flags` go on the command line; stderr is added to `log`."""
    script = tmp_path / f"{name}.lua"
    script.write_text("function process(row)\n"
                      f"  if row.id:find('camera') then {camera_line} end\n"
                      "  return row\n"
                      "end\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"""\
pipeline:
  stages:
    - lua: {json.dumps(str(script))}
      name: {name}
      after: read
{more_yaml}""")
    out = tmp_path / "out"
    r = sluice.run("run", job, SAMPLES, *MODEL, "-o", out, "--metrics-addr", "127.0.0.1:0",
                   "--max-tokens", "2", *flags)
    assert r.returncode == 3, r.stderr  # the run went on; rows failed
    if log is not None:
        log.append(r.stderr)
    rows = {row["id"]: row for row in read_rows(out)}
    failed = {i: row for i, row in rows.items() if row["error"]}
    assert failed and sorted(failed) == sorted(i for i in rows if "camera" in i)
    assert len(rows) > len(failed)
    for row in failed.values():
        assert row["error_stage"] == name
    return script, failed, out


def test_a_script_error_fails_its_row_with_its_line_and_logs_the_traceback(sluice, tmp_path):
    """A Lua error put its whole traceback (a line per frame) into the row's
    error column; the column is the message at its script:line, what a
    user greps for, and the traceback is in the log at debug level (-v),
    on one line naming the stage and the row."""
    log = []
    script, failed, out = camera_rows_fail(sluice, tmp_path, "picky",
                                           "error('cameras are shy')", flags=("-v",), log=log)
    for row in failed.values():
        assert row["error"] == f"{script}:2: cameras are shy", row["error"]
        traced = [line for line in log[0].splitlines()
                  if line.startswith(f"sluice: debug: stage 'picky': row {row['id']}: ")]
        assert len(traced) == 1, log[0]
        assert f"{script}:2: cameras are shy | stack traceback: | " in traced[0], traced
        assert f"{script}:2: in function 'process'" in traced[0], traced
    prom = (out / "_metrics.prom").read_text()
    assert re.search(r'sluice_rows_failed_by_class_total\{stage="picky",class="stage"\} '
                     f"{len(failed)}", prom), prom


def test_an_error_holding_a_nul_byte_keeps_its_whole_text(sluice, tmp_path):
    """A Lua string may hold NUL: the row's error was cut there (a C string
    from then on). The NUL is written as \\x00, as the printer writes a
    control byte, and the text after it stays."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "nul",
                                         "error('before\\0after the NUL')")
    for row in failed.values():
        assert row["error"] == f"{script}:2: before\\x00after the NUL", row["error"]


@pytest.mark.parametrize("line,said", [
    ("row.columns.h = 'x\\0y'", "row.columns.h holds a NUL byte (byte 2 of 3)"),
    ("row.columns.h = {k = 'ab\\0'}", "a string holds a NUL byte (byte 3 of 3)"),
    ("row.columns['h\\0i'] = 1", "a column's name holds a NUL byte (byte 2 of 3)"),
    ("row.prompt = 'Say\\0more'", "row.prompt holds a NUL byte (byte 4 of 8)"),
], ids=["column", "nested", "name", "prompt"])
def test_a_text_holding_a_nul_byte_fails_its_row_not_cut_short(sluice, tmp_path, line, said):
    """A Lua string may hold NUL; sluice's texts are C strings. A column set
    to "x\\0y" was written as "x" (the prompt, the answer and a column's
    name cut the same way), with no word; one inside a table failed in
    jansson's terms ("without JSON_ALLOW_NUL"). Now the row fails naming
    the field and the byte, as a manifest's \\u0000 is refused."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "nul", line)
    for row in failed.values():
        assert row["error"].startswith(f"{script}:2: {said}, which sluice does not take"), \
            row["error"]


def test_from_json_of_a_nul_says_so_in_a_users_words(sluice, tmp_path):
    """sluice.from_json('"a\\u0000b"') raised "\\u0000 is not allowed without
    JSON_ALLOW_NUL", a flag of jansson's a script cannot pass."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "nul",
                                         "sluice.from_json('\"a\\\\u0000b\"')")
    for row in failed.values():
        assert row["error"].startswith(f"{script}:2: not JSON: a string holds \\u0000 (NUL), "
                                       "which sluice does not take"), row["error"]
        assert "JSON_ALLOW_NUL" not in row["error"], row["error"]


def test_a_call_past_its_time_limit_fails_its_row_and_the_run_goes_on(sluice, tmp_path):
    """A job file's time_limit: the rows whose call loops fail naming the
    line and the limit; the same worker goes on with the other rows."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "stuck", "while true do end",
                                         "      time_limit: 0.3\n")
    for row in failed.values():
        assert row["error"].startswith(
            f"{script}:2: still running after 0.3 s, the stage's time_limit"), row["error"]


def test_os_exit_fails_its_row_instead_of_ending_the_run(sluice, tmp_path):
    """os.exit() ended sluice at once, exit 0, with no row written and no
    message; it is an error now, so the row fails and the run goes on."""
    _, failed, _ = camera_rows_fail(sluice, tmp_path, "quitter", "os.exit(0)")
    for row in failed.values():
        assert "os.exit() would end the whole run" in row["error"], row["error"]


def test_a_column_name_that_is_not_utf8_is_said_so(sluice, tmp_path):
    """A column named "bad\\xff" fails its row, but was said as "out of
    memory setting column" (no JSON object takes the name); now the row
    says the name is not UTF-8, and the run goes on."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "badname",
                                         "row.columns['bad\\xff'] = 'x'")
    for row in failed.values():
        assert "a stage cannot set a column named 'bad" in row["error"], row["error"]
        assert "(the name is not UTF-8)" in row["error"], row["error"]
        assert "out of memory" not in row["error"], row["error"]


def test_a_prompt_of_another_type_is_said_in_the_scripts_terms(sluice, tmp_path):
    """row.prompt = {1, 2} failed its row with Lua's "bad argument #3 to
    'newindex' (string expected, got table)", naming neither the field nor
    what it takes; now "row.prompt takes a string (nil: the job's prompt),
    got table"."""
    script, failed, _ = camera_rows_fail(sluice, tmp_path, "typed", "row.prompt = {1, 2}")
    for row in failed.values():
        assert row["error"].startswith(
            f"{script}:2: row.prompt takes a string (nil: the job's prompt), got table"), \
            row["error"]


def test_columns_a_stage_sets_count_in_the_memory_budget(sluice, tmp_path):
    """A column a stage sets is in its row's bytes: the memory budget
    counted none of it (200 MB on each row: a peak in flight of 7 MB beside
    3.3 GB resident)."""
    script = tmp_path / "big.lua"
    script.write_text("function process(row) row.columns.big = string.rep('x', 16 << 20) "
                      "return row end\n")
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--stage", f"{script}@read", "--limit", "2",
                       "--max-tokens", "2", "--metrics-addr", "127.0.0.1:0")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["memory"]["peak_bytes_in_flight"] >= 16 << 20, summary["memory"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset"])
def test_a_filters_dropped_rows_count_toward_shard_rows(sluice, tmp_path, fmt):
    """docs/output.md "Shards": the rows a stage drops count toward
    --shard-rows (each is done with the part it fell in), and a part whose
    rows were all dropped is a file of no rows that the readers take as
    none. In input order (--ordered) the six samples less camera, chelsea
    and coffee, two a part: [astronaut], [], [hubble, rocket]."""
    import tarfile
    import duckdb
    script = tmp_path / "no_c.lua"
    script.write_text("function process(row) if row.id:sub(1, 1) == 'c' then return nil end "
                      "return row end\n")
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--stage", f"{script}@read", "--ordered", "--shard-rows",
                       "2", "--exclude", "variants/*", "--max-tokens", "2", "--format", fmt,
                       "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    parts = sorted(out.glob("part-*"))
    assert [p.name for p in parts] == [f"part-0000{i}.{'tar' if fmt == 'webdataset' else fmt}"
                                       for i in range(3)], parts
    if fmt == "jsonl":
        ids = [[json.loads(line)["id"] for line in p.read_text().splitlines()] for p in parts]
    elif fmt == "parquet":
        ids = [pq.read_table(p).column("id").to_pylist() for p in parts]
        assert duckdb.connect().execute(f"SELECT count(*) FROM '{out}/*.parquet'").fetchone() \
            == (3,)
    else:
        ids = []
        for p in parts:
            with tarfile.open(p) as tar:
                ids.append([json.load(tar.extractfile(m))["id"] for m in tar.getmembers()
                            if m.name.endswith(".json")])
    assert ids == [["astronaut.jpg"], [], ["hubble.jpg", "rocket.jpg"]], ids


def test_a_parquet_column_a_stage_did_not_declare_is_warned_of_with_the_fix(sluice, tmp_path):
    """A Parquet output and a stage that sets a column it did not declare:
    the column is not in the file, and the warning said it was first seen
    after "the first 100 input rows" and to list the input columns with
    --columns, which a stage's column is not. Now it names the stage's
    columns as the place to declare it; the rows are counted as before."""
    script = tmp_path / "late.lua"
    script.write_text("function process(row) row.columns.late = 1 return row end\n")
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--stage", f"{script}@engine", "--limit", "2",
                       "--max-tokens", "2", "--metrics-addr", "127.0.0.1:0",
                       "--format", "parquet")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "column 'late'" in line]
    assert len(warned) == 1, r.stderr
    assert "first seen after the Parquet columns were planned (from the first 100 input rows " \
           "and the columns the stages declare)" in warned[0], warned
    assert "late:string keeps any value as its JSON text): an input's in --columns, one a " \
           "stage sets in that stage's columns" in warned[0], warned
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["unfit_values"]["late"]["rows"] == 2, summary["unfit_values"]


def test_a_stage_reads_and_changes_task_answers_and_copies_keep_them(sluice, tmp_path):
    """With tasks, a stage after the engine reads each task's answer by name
    (row.answer is nil: there is no single answer), replaces one, and a copy
    of the row carries every answer."""
    script = tmp_path / "tasks.lua"
    script.write_text(
        "function process(row)\n"
        "  assert(row.answer == nil and row:task_answer('nope') == nil)\n"
        "  local a, b = row:task_answer('short'), row:task_answer('tags')\n"
        "  assert(a and b, 'no task answers')\n"
        "  row.columns.lens = #a .. ',' .. #b\n"
        "  row:set_task_answer('tags', string.upper(b))\n"
        "  local ok = pcall(function() row:set_task_answer('nope', 'x') end)\n"
        "  assert(not ok)\n"
        "  return {row, sluice.copy(row)}\n"
        "end\n")
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--task", "short=Describe it.", "--task", "tags=List tags.",
                       "--max-tokens", "4", "--stage", f"{script}@engine")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_rows(out)
    by_id = {row["id"]: row for row in rows}
    originals = [row for row in rows if "#" not in row["id"]]
    assert originals and len(rows) == 2 * len(originals)
    for row in originals:
        copy = by_id[row["id"] + "#1"]
        assert row["error"] is None and copy["error"] is None
        assert row["tags"] == row["tags"].upper() and copy["tags"] == row["tags"]
        assert copy["short"] == row["short"] and row["short"] is not None
        assert row["lens"] == f"{len(row['short'].encode())},{len(row['tags'].encode())}"


@pytest.mark.parametrize("where, tasks, said", [
    ("engine", (), "has its answer: a prompt is set before the engine"),
    ("read", ("--task", "a=Describe it.", "--task", "b=List tags."), "a row's prompt is not used with tasks"),
])
def test_a_prompt_set_where_nothing_reads_it_fails_the_row(sluice, tmp_path, where, tasks, said):
    """row.prompt written after the engine, or in a job of tasks (each asks
    its own prompt), changed nothing and said nothing: the answers were as
    without it. The write now fails its row naming why; rows the script
    leaves alone go on."""
    script = tmp_path / "prompt.lua"
    script.write_text("function process(row)\n"
                      "  if row.id:find('camera') then row.prompt = 'say yes' end\n"
                      "  return row\n"
                      "end\n")
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, "--max-tokens", "2", "--stage", f"{script}@{where}", *tasks)
    assert r.returncode == 3, r.stderr[-2000:]
    rows = {row["id"]: row for row in read_rows(out)}
    failed = {i for i, row in rows.items() if row["error"]}
    assert failed and failed == {i for i in rows if "camera" in i}
    for i in failed:
        assert said in rows[i]["error"] and i in rows[i]["error"], rows[i]["error"]
    assert len(rows) > len(failed)


def test_a_decimal_column_is_a_number_to_a_script(sluice, tmp_path):
    """A Parquet decimal column passes through as its exact digits (1.10);
    a script sees it as the number it is (the double nearest it), not as
    the text it is carried in, and the column it does not set keeps its
    digits."""
    from decimal import Decimal
    import pyarrow as pa
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"path": [str(SAMPLES / "coffee.jpg")],
                             "price": pa.array([Decimal("1.10")], pa.decimal128(5, 2))}), path)
    script = tmp_path / "s.lua"
    script.write_text("function process(row)\n"
                      "  row.columns.kind = type(row.columns.price)\n"
                      "  row.columns.twice = row.columns.price * 2\n"
                      "  row.columns.text = sluice.to_json(row.columns.price)\n"
                      "  return row\nend\n")
    out = tmp_path / "out"
    r = sluice.run("caption", path, "-o", out, "--dry-run", "--metrics-addr", "off", "-q", "--format", "jsonl",
                   "--stage", f"{script}@read")
    assert r.returncode == 0, r.stderr
    line = (out / "part-00000.jsonl").read_text()
    assert '"price":1.10,' in line, line
    row = json.loads(line)
    assert (row["error"], row["kind"], row["twice"], row["text"]) == (None, "number", 2.2, "1.1"), row


@pytest.mark.parametrize("example", ["filter.yaml", "yes_no.yaml"])
def test_the_filter_examples_write_their_score_as_a_number(sluice, four, tmp_path, example):
    """examples/filter.yaml and examples/yes_no.yaml write a probability,
    p_yes, into their Parquet output to filter on; their stage declared
    `columns: [p_yes]`, so the column held the number's text (VARCHAR) and
    DuckDB's `WHERE p_yes > 0.5` was a Binder Error ("Cannot compare values
    of type VARCHAR and type DECIMAL"). Each runs with its own stage as the
    example declares it (threshold 0: the random model keeps every row)."""
    import duckdb
    import yaml
    path = REPO / "examples" / example
    stage = yaml.safe_load(path.read_text())["pipeline"]["stages"][0]
    stage["lua"] = str(REPO / stage["lua"])
    stage["config"]["threshold"] = 0
    out = tmp_path / "out"
    r = sluice.run("run", path, four, "-o", out, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "--stage", json.dumps(stage), "--metrics-addr", "off",
                   "--show", "0")
    assert r.returncode == 0, r.stderr
    rows = duckdb.connect().execute(f"SELECT typeof(p_yes), p_yes FROM '{out}/*.parquet' "
                                    "WHERE p_yes >= 0").fetchall()
    assert len(rows) == 4 and all(t == "DOUBLE" and 0 <= p <= 1 for t, p in rows), rows


def test_the_console_counts_the_rows_a_filter_dropped(sluice, tmp_path):
    """examples/filter.yaml keeping nothing (threshold 2: no score reaches
    it) said "0 images: 0 captioned, 0 failed" of the images it had
    answered, and a rerun over a folder with new images, all dropped, said
    "all inputs were already done ... nothing new written". The console
    counts them as _summary.json's rows.dropped does."""
    import yaml
    stage = yaml.safe_load((REPO / "examples" / "filter.yaml").read_text())["pipeline"]["stages"][0]
    stage["lua"] = str(REPO / stage["lua"])
    stage["config"]["threshold"] = 2
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ORIGINALS[:2]:
        shutil.copy(SAMPLES / name, inputs / name)

    def run():
        return sluice.run("run", REPO / "examples" / "filter.yaml", inputs, "-o", out, *MODEL,
                          "--stage", json.dumps(stage), "--metrics-addr", "off", "--show", "0")

    r = run()
    assert r.returncode == 0, r.stderr
    assert "\n2 images: 0 captioned, 0 failed, 2 dropped by a stage (not written) in " in r.stdout, \
        r.stdout
    for name in ORIGINALS[2:4]:
        shutil.copy(SAMPLES / name, inputs / name)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "already done" not in r.stdout, r.stdout
    assert "resumed: 2 inputs skipped, done by an earlier run\n2 images: 0 captioned, 0 failed, " \
           "2 dropped by a stage (not written) in " in r.stdout, r.stdout
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["rows"]["dropped"], summary["rows"]["skipped"]) == (2, 2), summary["rows"]


def test_a_stopped_run_says_the_rows_a_filter_dropped(sluice, tmp_path):
    """A filter stopped by Ctrl-C said "0 rows written (0 failed)" of the
    rows its stage had dropped, while the progress line above it counted
    them done: where those inputs went was not said. The stage here drops
    every row and sends its own process SIGTERM (a stop as Ctrl-C's; SIGINT
    is ignored while os.execute waits) at its first row, so the stop comes
    while rows are still in the stage's and the engine's hands."""
    script = tmp_path / "drop_and_stop.lua"
    script.write_text(
        "local sent = false\n"
        "function process(row)\n"
        "  if not sent then\n"
        "    sent = true\n"
        "    local f = io.open('/proc/self/stat')\n"
        "    local pid = f:read('*n')\n"
        "    f:close()\n"
        "    os.execute('kill -TERM ' .. pid)\n"
        "  end\n"
        "  return nil\n"
        "end\n")
    inputs, out = tmp_path / "in", tmp_path / "out"
    # More inputs than the queues between the engine and the stage hold: on
    # a loaded machine the stage's first call may come late, and with six
    # the engine had answered every row by then (none left to defer).
    sample_copies(inputs, 6)
    r = sluice.run("caption", inputs, "-o", out, *MODEL, "--parallel", "1", "--max-tokens", "4",
                   "--stage", f"{script}@engine", "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 130, r.stderr
    summary = json.loads((out / "_summary.json").read_text())
    dropped = summary["rows"]["dropped"]
    assert dropped >= 1 and summary["rows"]["total"] == 0, summary["rows"]
    assert "sluice: 0 rows written (0 failed) to " in r.stderr, r.stderr
    assert f"\nsluice: {dropped} row{'s' if dropped > 1 else ''} dropped by a stage (not " \
           "written; done: a rerun skips them)\n" in r.stderr, r.stderr
    # The rows the stop left unsent were "out" of the engine and of this
    # stage (drop_and_stop 4/6 after dropping 2 of 6): passed on by neither.
    stages = {s["name"]: s for s in summary["stages"]}
    deferred = summary["rows"]["deferred"]
    assert deferred >= 1, summary["rows"]
    assert stages["drop_and_stop"]["rows_out"] == 0, stages
    assert stages["drop_and_stop"]["rows_dropped"] == dropped, stages
    assert stages["engine"]["rows_out"] == stages["engine"]["rows_in"] - deferred, stages


def test_counts_of_one_are_said_in_the_singular(sluice, tmp_path):
    """A run stopped with one row done said "1 rows written"; a run or a
    dry run of one image "1 images:" and "1 rows:". One image here, and a
    stage after the engine that stops the run (SIGTERM, as Ctrl-C) and keeps
    the row: the stop comes once that one row is answered, so it is written."""
    script = tmp_path / "keep_and_stop.lua"
    script.write_text(
        "function process(row)\n"
        "  local f = io.open('/proc/self/stat')\n"
        "  local pid = f:read('*n')\n"
        "  f:close()\n"
        "  os.execute('kill -TERM ' .. pid)\n"
        "  return row\n"
        "end\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / ORIGINALS[0], inputs / ORIGINALS[0])
    r = sluice.run("caption", inputs, "-o", tmp_path / "out", *MODEL, "--max-tokens", "4",
                   "--stage", f"{script}@engine", "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 130, r.stderr
    assert "\nsluice: 1 row written (0 failed) to " in r.stderr, r.stderr
    r = sluice.run("caption", inputs, "-o", tmp_path / "out1", *MODEL, "--max-tokens", "4",
                   "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    assert "\n1 image: 1 captioned, 0 failed in " in r.stdout, r.stdout
    r = sluice.run("caption", inputs, "-o", tmp_path / "dry", "--dry-run", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    assert "dry run (no model): 1 row: 1 read and decoded, 0 failed in " in r.stdout, r.stdout


@pytest.mark.parametrize("flags, said", [
    (("--samples", "2", "--temperature", "0.9"),
     "'chelsea.jpg' has 2 answers (--samples), not one: they are read with row:answers() and "
     "not set"),
    (("--task", "a=Describe it."),
     "'chelsea.jpg' has its tasks' answers, not one: set a task's with "
     "row:set_task_answer(name, text)"),
])
def test_setting_the_answer_of_a_row_of_several_answers_fails_it(sluice, tmp_path, flags, said):
    """With --samples or tasks a row's answers are written from each
    answer's own text: `row.answer = ...` in a stage after the engine
    changed nothing the output holds, and said nothing (the rows were
    written with the model's answers, error null). Now the write fails the
    row, saying why, as setting row.prompt after the engine does."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "chelsea.jpg").symlink_to(SAMPLES / "chelsea.jpg")
    script = tmp_path / "set.lua"
    script.write_text("function process(row)\n  row.answer = 'mine'\n  return row\nend\n")
    out = tmp_path / "out"
    r = sluice.caption(src, out, "--max-tokens", "2", "--stage", f"{script}@engine",
                       "--metrics-addr", "off", "--show", "0", *flags)
    assert r.returncode == 3, r.stderr
    rows = read_rows(out)
    assert rows and all(row["error_stage"] == "set" and row["error"] == f"{script}:2: {said}"
                        for row in rows), rows


def test_a_column_too_deep_for_lua_is_named(sluice, tmp_path):
    """A pass-through column nested deeper than a stage's Lua tables take
    failed its row with "deep.lua:2: JSON nested deeper than 64": which
    value was too deep was for the user to find. It is named now."""
    image = tmp_path / "a.jpg"
    shutil.copy(SAMPLES / ORIGINALS[0], image)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(image), "meta": json.loads("[" * 70 + "1" +
                                                                          "]" * 70)}) + "\n")
    script = tmp_path / "deep.lua"
    script.write_text("function process(row)\n  local m = row.columns.meta\n  return row\nend\n")
    out = tmp_path / "out"
    r = sluice.run("caption", manifest, "-o", out, *MODEL, "--max-tokens", "2", "--stage",
                   f"{script}@decode", "--metrics-addr", "off", "--show", "0")
    assert r.returncode == 3, r.stderr
    [row] = read_rows(out)
    assert row["error"] == f"{script}:2: row.columns.meta holds JSON nested deeper than 64", row
