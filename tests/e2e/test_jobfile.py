"""Job files end to end: `sluice run job.yaml` gives the rows of the same
`sluice caption` command, flags override the file, `sluice config print`
reads back to the same settings (and runs), `sluice config check` says what
to change with the line, every caption flag has a key, and the example
examples/caption.yaml runs on the tiny model."""
import json
import pathlib
import re

import pytest

from conftest import REPO, SAMPLES, TINY, read_rows, sample_images

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

COMPARED = ("id", "caption", "finish_reason", "prompt_tokens", "generated_tokens", "width",
            "height", "seed", "error")


def job_text(out_dir, extra=""):
    return f"""\
# the tiny model, greedy, one sequence at a time: the same captions every run
input:
  paths: [{json.dumps(str(SAMPLES))}]
llama:
  model: {json.dumps(str(TINY / "model.gguf"))}
  mmproj: {json.dumps(str(TINY / "mmproj.gguf"))}
  parallel: 1
sampling:
  max_tokens: 12
  stop: ["\\n\\n"]
pipeline:
  ordered: true
output:
  dir: {json.dumps(str(out_dir))}
metrics:
  addr: "off"
{extra}"""


def rows_of(out_dir):
    return [{k: r[k] for k in COMPARED} for r in read_rows(out_dir)]


def test_run_gives_the_rows_of_the_same_caption_command(sluice, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "from_job"))
    r = sluice.run("run", job)
    assert r.returncode == 0, r.stderr
    c = sluice.caption(SAMPLES, tmp_path / "from_flags", "--parallel", "1", "--max-tokens", "12",
                       "--stop", "\n\n", "--ordered", "--metrics-addr", "off")
    assert c.returncode == 0, c.stderr
    from_job, from_flags = rows_of(tmp_path / "from_job"), rows_of(tmp_path / "from_flags")
    assert len(from_job) == len(sample_images())
    assert from_job == from_flags
    assert any(row["caption"] for row in from_job), "the model generated nothing at all"
    # The job file and the flags make the same job: the caption command
    # resumes the job file's output (its ledger holds the same settings).
    again = sluice.caption(SAMPLES, tmp_path / "from_job", "--parallel", "1", "--max-tokens", "12",
                           "--stop", "\n\n", "--ordered", "--metrics-addr", "off")
    assert again.returncode == 0, again.stderr
    assert "all inputs were already done" in again.stdout, again.stdout + again.stderr


def test_flags_override_the_file_and_inputs_replace_its_paths(sluice, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "unused"))
    one = tmp_path / "one"
    one.mkdir()
    first = sample_images()[0]
    (one / first.name).write_bytes(first.read_bytes())
    r = sluice.run("run", job, one, "-o", tmp_path / "out", "--max-tokens", "2", "--show", "0")
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "out")
    assert [row["id"] for row in rows] == [first.name]
    assert rows[0]["generated_tokens"] <= 2
    assert not (tmp_path / "unused").exists()
    # A switch the file turned on is turned off with =false.
    p = sluice.run("config", "print", job, "--ordered=false", "--max-tokens", "5")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^  ordered: false", p.stdout, re.M)
    assert re.search(r"^  max_tokens: 5 ", p.stdout, re.M)
    # Lists are replaced by the flags, not added to.
    p = sluice.run("config", "print", job, "--stop", "END")
    assert re.search(r'^  stop: +#.*\n    - "END"\n\n', p.stdout, re.M), p.stdout


def test_a_moved_key_is_read_under_its_old_name(sluice, tmp_path):
    """batch.errors_file became output.errors_file: job files that say the old
    name still set it, and `config print` writes the new one."""
    job = tmp_path / "job.yaml"
    job.write_text("batch:\n  errors_file: failed.jsonl\n")
    p = sluice.run("config", "print", job)
    assert p.returncode == 0, p.stderr
    sections = dict(re.findall(r"^(\w+):\n((?:  .*\n)*)", p.stdout, re.M))
    assert re.search(r'^  errors_file: "failed\.jsonl"', sections["output"], re.M), p.stdout
    assert "errors_file" not in sections["batch"]


def test_config_print_reads_back_to_the_same_settings_and_runs(sluice, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "a", extra="console:\n  show: 0\n"))
    first = sluice.run("config", "print", job, "--temperature", "0.7", "--seed", "3")
    assert first.returncode == 0, first.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(first.stdout)
    second = sluice.run("config", "print", printed)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    # Every key is there, defaults included.
    keys = sluice.run("config", "keys").stdout.splitlines()
    for line in keys:
        leaf = line.split()[0].split(".")[-1]
        assert re.search(rf"^\s*{leaf}:", first.stdout, re.M), leaf
    # An empty job file turns a caption command line into a job file.
    cmdline = sluice.run("config", "print", "/dev/null", SAMPLES, "-o", tmp_path / "d", "-n", "5")
    assert cmdline.returncode == 0, cmdline.stderr
    assert f'    - "{SAMPLES}"\n' in cmdline.stdout and "  max_tokens: 5 " in cmdline.stdout
    # The printed file runs the job the original describes (with the flags).
    r = sluice.run("run", printed, "-o", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    o = sluice.run("run", job, "-o", tmp_path / "c", "--temperature", "0.7", "--seed", "3")
    assert o.returncode == 0, o.stderr
    assert rows_of(tmp_path / "b") == rows_of(tmp_path / "c")


def test_config_check_and_bad_files_exit_2_naming_the_line(sluice, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(job_text(tmp_path / "out"))
    r = sluice.run("config", "check", good)
    assert r.returncode == 0 and r.stdout.strip() == f"{good}: ok", r.stdout + r.stderr
    assert not (tmp_path / "out").exists(), "check ran the job"

    bad = tmp_path / "bad.yaml"
    cases = [
        ("llama:\n  model: m.gguf\n  paralel: 2\n", f"{bad}:3:3: unknown key 'paralel' in llama",
         "did you mean 'parallel'?"),
        ("sampling:\n  max_tokens: lots\n", f"{bad}:2:15: sampling.max_tokens expects an integer "
         "from 1 to 1048576, got 'lots'", None),
        ("output: out\n", f"{bad}:1:9: output is a section: write its keys (dir, format,", None),
        ("input:\n  paths: [a\n", f"{bad}:3:1: YAML syntax:", None),
    ]
    for text, want, also in cases:
        bad.write_text(text)
        for cmd in (("config", "check", bad), ("run", bad), ("config", "print", bad)):
            r = sluice.run(*cmd)
            assert r.returncode == 2, (cmd, r.stdout, r.stderr)
            assert want in r.stderr, (cmd, r.stderr)
            assert also is None or also in r.stderr, r.stderr
            assert r.stdout == "", r.stdout
    # Valid, but nothing to run: says which key to add.
    bad.write_text("llama: {model: m.gguf, mmproj: p.gguf}\ninput: {paths: [x]}\n")
    r = sluice.run("config", "check", bad)
    assert r.returncode == 2 and "sets no output folder: add output.dir, or pass -o DIR" in r.stderr
    r = sluice.run("config", "check", bad, "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    r = sluice.run("run", tmp_path / "missing.yaml")
    assert r.returncode == 2 and "missing.yaml" in r.stderr and "No such file" in r.stderr
    r = sluice.run("run")
    assert r.returncode == 2 and "needs a job file" in r.stderr
    # A flag's error still names the flag.
    r = sluice.run("run", good, "--parallel", "-1")
    assert r.returncode == 2 and "--parallel expects an integer from 0 to 255" in r.stderr


def test_a_value_quoted_in_a_message_shows_its_control_characters_escaped(sluice, tmp_path):
    """A number written as a YAML block scalar (`parallel: |`) keeps its
    final newline: the message said "got '2" and "'" on the next line.
    Control characters of a quoted value are now written as C escapes, the
    message one line, on the command line too."""
    job = tmp_path / "job.yaml"
    job.write_text("llama:\n  parallel: |\n    2\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stdout
    assert r.stderr == (f"sluice: {job}:2:13: llama.parallel expects an integer from 0 to 255, "
                        "got '2\\n'\n"), r.stderr
    r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o",
                   "--max-tokens", "5\t\r")
    assert r.returncode == 2, r.stdout
    assert r.stderr == ("sluice: --max-tokens expects an integer from 1 to 1048576, "
                        "got '5\\t\\r'\n"), r.stderr


def test_a_value_quoted_by_a_later_check_shows_its_control_characters_escaped(sluice,
                                                                             tmp_path):
    """Only the messages of setting a value escaped its control characters;
    the checks made once every setting is read (the tasks file read, its
    tasks' names) quoted the value raw: a tasks.file written as a block
    scalar broke its message's line after the path, a task name holding a
    newline in the middle of the message."""
    job = tmp_path / "job.yaml"
    job.write_text(f"tasks:\n  file: |\n    {tmp_path}/none.json\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stdout
    assert r.stderr == (f"sluice: {job}:2:9: tasks.file '{tmp_path}/none.json\\n': No such "
                        "file or directory\n"), r.stderr
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a\nb": {"prompt": "x"}}))
    job.write_text(f"tasks:\n  file: {tasks}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stdout
    assert r.stderr == (f"sluice: {tasks}: task name 'a\\nb' must be letters, digits and _ (not "
                        "first a digit), at most 64 bytes: it names output columns\n"), r.stderr


@pytest.mark.parametrize("flags, said", [
    (("--choices", "yes,no", "--json-schema", "SCHEMA"), "--choices: not with --json-schema"),
    (("--choices", "no"), "--choices"),
    (("--include-image-bytes",), "--include-image-bytes needs --format parquet or webdataset"),
    (("--dry-run", "--stage", "LUA@engine"), "a dry run has no answers"),
    (("--task", "a=x", "--image-placeholder", "<image>"), "--image-placeholder"),
    (("--stage", "LUA@engine", "--stage", "LUA@engine"),
     "a name of its own, got 's' (another stage's or a built-in one's): give it a name (a job's "
     "stages: their name key"),
    (("-o", "AFILE"), "is a file, not a folder"),
    # checked only as the engine opened: config check said ok
    (("--engine", "openai", "--endpoint", "http://127.0.0.1:9", "--header", "X-A"),
     "--header 'X-A': expected 'NAME: VALUE'"),
    (("--engine", "openai", "--endpoint", "ftp://x"), "--endpoint 'ftp://x': expected a URL"),
])
def test_config_check_refuses_what_the_run_refuses_at_its_start(sluice, tmp_path, flags, said):
    """config check said ok (exit 0) to settings the run then refused at
    its start with exit 2 (only the stages and answer columns were
    checked): now it checks what the run does before it reads or loads
    anything, the same message, the same exit status. An output path that
    is a file was an I/O failure of the run (exit 1): now a wrong
    command line, exit 2, from both."""
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "out"))
    (tmp_path / "schema.json").write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    (tmp_path / "s.lua").write_text("function process(row) return row end\n")
    (tmp_path / "afile").write_text("not a folder")
    subst = {"SCHEMA": str(tmp_path / "schema.json"), "LUA@engine": f"{tmp_path / 's.lua'}@engine",
             "AFILE": str(tmp_path / "afile")}
    flags = [subst.get(f, f) for f in flags]
    check = sluice.run("config", "check", job, *flags)
    run = sluice.run("run", job, *flags)
    assert run.returncode == 2 and said in run.stderr, run.stderr
    assert check.returncode == 2 and said in check.stderr, (check.stdout, check.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prop, column, flags", [
    ("caption", "caption", ()),
    ("sample", "sample", ()),
    ("finish_reason", "r_finish_reason", ("--task", "r=Describe it.")),
])
def test_config_check_refuses_an_answer_column_named_like_the_outputs_own(sluice, tmp_path,
                                                                          prop, column, flags):
    """A schema property whose --answer-columns column would be one of the
    output's own (caption, sample, a task's NAME_finish_reason) was refused
    by the run at its start (exit 2), after config check had said ok: the
    check planned the answer columns but not their names against the job's."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {prop: {"type": "string"}}}))
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "out").replace('  stop: ["\\n\\n"]\n', "") +
                   f"output.answer_columns: true\nsampling.json_schema: {json.dumps(str(schema))}\n")
    said = f"the property '{prop}' would be the column '{column}', one of the output's own"
    check = sluice.run("config", "check", job, *flags)
    run = sluice.run("run", job, *flags)
    assert run.returncode == 2 and said in run.stderr, run.stderr
    assert check.returncode == 2 and said in check.stderr, (check.stdout, check.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, flags, said", [
    # one key: its line, its name
    ("sampling.choices: yes\n", (), "LINE: sampling.choices: 1 given; the answer is one of 2"),
    ('input.id_column: ""\n', (), "LINE: input.id_column is empty"),
    ("llama.image_min_tokens: 300\nllama.image_max_tokens: 100\n", (),
     "LINE: llama.image_min_tokens 300 is above llama.image_max_tokens 100"),
    # a setting left at its default is named as the key beside it is
    ("output.include_image_bytes: true\n", (),
     "LINE: output.include_image_bytes needs output.format parquet or webdataset"),
    # a flag over the file stays the flag the user typed
    ("sampling.choices: [a, b]\n", ("--json-schema", "SCHEMA"),
     "LINE: sampling.choices: not with --json-schema"),
    ("sampling.choices: [a, b]\n", ("--choices", "yes"), "--choices: 1 given"),
])
def test_checks_after_parsing_name_the_job_files_keys(sluice, tmp_path, extra, flags, said):
    """A job file's settings checked together (after the file was read)
    were named by flags the user never typed, with no line: `choices: yes`
    said "--choices: 1 given". Now a key the file set is named as the key,
    at its line; a flag given over the file keeps its name."""
    job = tmp_path / "job.yaml"
    text = job_text(tmp_path / "out")
    job.write_text(text + extra)
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    flags = [str(tmp_path / "schema.json") if f == "SCHEMA" else f for f in flags]
    said = "sluice: " + said.replace("LINE:", f"{job}:{text.count(chr(10)) + 1}:")
    for cmd in ("run", "config check"):
        r = sluice.run(*cmd.split(), job, *flags)
        assert r.returncode == 2, (cmd, r.stderr)
        error = r.stderr.splitlines()[-1]
        assert re.sub(r"^(sluice: .*?\.yaml:\d+:)\d+:", r"\1", error).startswith(said), \
            (cmd, r.stderr)
    assert not (tmp_path / "out").exists()


def test_caption_names_the_flags_in_the_same_checks(sluice, tmp_path):
    r = sluice.caption(SAMPLES, tmp_path / "out", "--choices", "yes")
    assert r.returncode == 2 and "sluice: --choices: 1 given" in r.stderr, r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "out", "--image-min-tokens", "300",
                       "--image-max-tokens", "100")
    assert "sluice: --image-min-tokens 300 is above --image-max-tokens 100" in r.stderr, r.stderr


@pytest.mark.parametrize("text, said", [
    # a dotted key inside its own section: the name it has there
    ("llama: {llama.parallel: 2}\n", "1:9: unknown key 'llama.parallel' in llama; did you mean "
     "'parallel'?"),
    # the right name in the wrong section, or at the top: the key's section
    ("image: {parallel: 2}\n", "1:9: unknown key 'parallel' in image; did you mean "
     "'llama.parallel' (parallel under llama)?"),
    ("parallel: 2\n", "1:1: unknown section or key 'parallel'; did you mean 'llama.parallel' "
     "(parallel under llama)?"),
    ("sampling.parallel: 2\n", "1:1: unknown section or key 'sampling.parallel'; did you mean "
     "'llama.parallel' (parallel under llama)?"),
    ("llama: {sampling.max_tokens: 2}\n", "1:9: unknown key 'sampling.max_tokens' in llama; did "
     "you mean 'sampling.max_tokens' (max_tokens under sampling)?"),
    # a name two sections have: both, the flag's own first
    ("max_tokens: 5\n", "did you mean 'sampling.max_tokens' or 'tasks.max_tokens'?"),
    # by its flag's name
    ("llama: {decode_workers: 2}\n", "did you mean 'image.workers' (workers under image)?"),
    # a key of the top, or a section, written inside one
    ("llama: {engine: openai}\n", "did you mean 'engine' (at the top, not in a section)?"),
    ("image: {sampling: {seed: 1}}\n", "did you mean the section 'sampling' (at the top)?"),
    # a dotted key misspelt in its section
    ("llama.paralel: 2\n", "did you mean 'llama.parallel' (parallel under llama)?"),
    # a key taken for a section
    ("engine: {parallel: 2}\n", "1:9: engine takes one value (llama|openai), not a mapping; for "
     "'parallel' did you mean 'llama.parallel' (parallel under llama)?"),
    # a list for one of a few names: the names
    ("output: {format: [jsonl, parquet]}\n", "1:18: output.format takes one value "
     "(jsonl|parquet|webdataset|openai-batch), not a list"),
])
def test_a_key_in_the_wrong_place_is_told_where_it_goes(sluice, tmp_path, text, said):
    """An unknown key got a "did you mean" only for a near spelling in its
    own section: `llama: {llama.parallel: 2}`, `image: {parallel: 2}` or
    `engine: {parallel: 2}` were told only what the section allows. A key
    whose last name (or flag) is a known key's now names that key, with
    its section."""
    job = tmp_path / "job.yaml"
    job.write_text(text)
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"sluice: {job}:"), r.stderr
    assert said in r.stderr, r.stderr


@pytest.mark.parametrize("data, said", [
    # Latin-1 bytes: named where they are, not at 1:1 (libyaml's reader
    # errors carry a byte offset, no line), and what to do about them
    # (columns count characters: déjà is 4)
    (b"prompt:\n  text: d\xc3\xa9j\xc3\xa0 \xe9t\xe9\n", "2:14: byte 0xE9 is not UTF-8: a job "
     "file is UTF-8 text; save it as UTF-8"),
    (b'prompt: {text: "caf\xe9"}\n', "1:20: byte 0xE9 is not UTF-8"),
    (b"output: {dir: out}\n\x80\n", "2:1: byte 0x80 is not UTF-8"),
    (b'prompt:\n  text: "a\x01b"\n', '2:11: YAML: control characters are not allowed (0x01): '
     'write it as an escape in a double-quoted string ("\\x01")'),
    # a tab for an indent: libyaml's words alone do not say it
    (b"llama:\n\tparallel: 2\n", "2:1: YAML syntax: found character that cannot start any "
     "token while scanning for the next token: indent with spaces, not tabs"),
    (b"llama:\n  model: m\n\tparallel: 2\n", "3:1: YAML syntax: found a tab character that "
     "violates indentation while scanning a plain scalar: indent with spaces, not tabs"),
    # a merge key was "unknown key '<<'", as if a name were misspelt
    (b"llama:\n  <<: {parallel: 2}\n", "2:3: merge keys (<<) are not used in job files: write "
     "the keys"),
])
def test_bytes_a_job_file_cannot_hold_are_named_at_their_place(sluice, tmp_path, data, said):
    """A job file with a Latin-1 byte said "job.yaml:1:1: YAML syntax:
    invalid trailing UTF-8 octet" whatever line it was on; a tab indent
    was "found character that cannot start any token"."""
    job = tmp_path / "job.yaml"
    job.write_bytes(data)
    for cmd in (("config", "check"), ("run",)):
        r = sluice.run(*cmd, job)
        assert r.returncode == 2, r.stderr
        assert f"sluice: {job}:{said}" in r.stderr, r.stderr


def test_a_folder_given_as_the_job_file_says_where_inputs_go(sluice, tmp_path):
    """`sluice run photos/` said "job file 'photos/': Is a directory"."""
    r = sluice.run("run", SAMPLES, "-o", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert f"job file '{SAMPLES}' is a folder: give a YAML job file first (sluice run JOB.yaml " \
           "[INPUT...]), or caption a folder with sluice caption" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_flag_given_twice_takes_its_last_value(sluice):
    """As docs/jobs.md says: a single-value flag given again replaces the
    first (a script's later flags override its own defaults); a list flag
    given again adds an item."""
    r = sluice.run("config", "print", "/dev/null", "--max-tokens", "5", "-n", "7", "--prompt",
                   "a", "--prompt", "b", "--stop", "x", "--stop", "y")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  max_tokens: 7 ", r.stdout, re.M), r.stdout
    assert re.search(r'^  text: "b" ', r.stdout, re.M), r.stdout
    assert re.search(r'^  stop: .*\n    - "x"\n    - "y"\n', r.stdout, re.M), r.stdout


def test_every_caption_flag_has_a_key(sluice):
    help_text = sluice.run("caption", "--help").stdout
    flags = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]+)", help_text)) - {"help", "version"}
    keys = sluice.run("config", "keys")
    assert keys.returncode == 0
    table = {}
    for line in keys.stdout.splitlines():
        m = re.search(r"--([a-z][a-z0-9-]+)", line)
        if m:
            table[m.group(1)] = line.split()[0]
    assert flags, help_text
    assert flags - set(table) == set(), "flags in --help without a key"
    assert set(table) - flags == set(), "keys with a flag that --help does not list"
    assert len(set(table.values())) == len(table), "two flags share a key"
    doc = (REPO / "docs" / "jobs.md").read_text()
    for line in keys.stdout.splitlines():
        assert f"`{line.split()[0]}`" in doc, f"docs/jobs.md does not list {line.split()[0]}"


def test_a_key_config_keys_calls_the_llama_engines_is_refused_with_openai(sluice, tmp_path):
    """`config keys` (and docs/jobs.md's table) may say "llama engine:" only
    of a key the openai engine refuses: sampling.choices said so while
    docs/output.md scores choices over HTTP too, so a user of a vLLM fleet
    was told to give up a setting that works."""
    (tmp_path / "g.gbnf").write_text('root ::= "a"\n')
    values = {"sampling.grammar": json.dumps(str(tmp_path / "g.gbnf")),
              "sampling.choices": "[yes, no]"}
    keys = sluice.run("config", "keys").stdout.splitlines()
    said = {line.split()[0] for line in keys if "llama engine" in line}
    assert said <= set(values), f"give a value to check for {said - set(values)}"
    for key, value in values.items():
        section, name = key.split(".")
        job = tmp_path / "job.yaml"
        job.write_text(f"""\
input:
  paths: [{json.dumps(str(SAMPLES))}]
output:
  dir: {json.dumps(str(tmp_path / "out"))}
engine: openai
openai:
  endpoints: [http://127.0.0.1:9]
{section}:
  {name}: {value}
""")
        r = sluice.run("config", "check", job)
        refused = r.returncode == 2
        assert refused == (key in said), (key, r.returncode, r.stderr)


def test_the_job_files_in_jobs_md_are_read(sluice, tmp_path, monkeypatch):
    """Every YAML block of docs/jobs.md is a job file config print reads,
    and one that names its inputs passes config check (its batch job once
    had output: twice, which sluice refuses). They run from the repository
    root; the files a block names are made here."""
    monkeypatch.chdir(tmp_path)
    for name in ("models", "samples"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "tasks.json").write_text('{"t": {"prompt": "Describe."}}')
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "tags.txt").write_text("Tags?\n")
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "jobs.md").read_text(), re.S)
    assert any("format: openai-batch" in b for b in blocks)
    for i, block in enumerate(blocks):
        job = tmp_path / f"block{i}.yaml"
        job.write_text(block)
        r = sluice.run("config", "print", job)
        assert r.returncode == 0, (block, r.stderr)
        if re.search(r"^input:", block, re.M):
            r = sluice.run("config", "check", job)
            assert r.returncode == 0, (block, r.stderr)


def test_the_example_job_runs_on_the_tiny_model(sluice, tmp_path, monkeypatch):
    """examples/caption.yaml, with the model paths and the output folder
    overridden (it names a hub model and out/ in the repository); its input
    path is relative to the repository, where it is meant to run."""
    monkeypatch.chdir(REPO)
    example = REPO / "examples" / "caption.yaml"
    r = sluice.run("config", "check", example)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "captions"
    r = sluice.run("run", example, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "-o", out, "--metrics-addr", "127.0.0.1:0",
                   "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out / "part-00000.parquet")
    ids = sorted(table.column("id").to_pylist())
    assert ids == sorted(str(p.relative_to(SAMPLES)) for p in sample_images())
    assert all(e is None for e in table.column("error").to_pylist())
    assert "vllm:generation_tokens_total" in (out / "_metrics.prom").read_text()
    assert (out / "_summary.json").exists() and (out / "_report.html").exists()


def test_a_relative_input_missing_where_the_job_runs_names_its_line_and_the_folder(
        sluice, tmp_path, monkeypatch):
    """examples/caption.yaml run from another folder said only "input
    'samples': No such file or directory": not the job file's line, nor that
    its paths are taken from the folder sluice runs in (docs/jobs.md)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    example = REPO / "examples" / "caption.yaml"
    lines = example.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.lstrip().startswith("paths:"))
    col = lines[line - 1].index("samples") + 1
    r = sluice.run("run", example, "--model", TINY / "model.gguf", "--mmproj",
                   TINY / "mmproj.gguf", "-o", tmp_path / "out", "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert f"sluice: {example}:{line}:{col}: input 'samples': No such file or directory " \
           f"(relative to the current folder, {elsewhere})" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    # Of several paths, the one missing is named at its own line; a pattern
    # that matches nothing is told the folder too.
    job = tmp_path / "job.yaml"
    job.write_text(job_text(tmp_path / "out").replace(
        f"paths: [{json.dumps(str(SAMPLES))}]",
        f"paths:\n    - {json.dumps(str(SAMPLES))}\n    - gone\n    - {json.dumps(str(SAMPLES))}"))
    r = sluice.run("run", job)
    assert r.returncode == 2, r.stderr
    assert f"sluice: {job}:5:7: input 'gone': No such file or directory (relative to the " \
           f"current folder, {elsewhere})" in r.stderr, r.stderr
    r = sluice.run("run", job, "pics/*.jpg")
    assert r.returncode == 2, r.stderr
    assert f"sluice: input 'pics/*.jpg' matches no file (relative to the current folder, " \
           f"{elsewhere})" in r.stderr, r.stderr
    r = sluice.run("run", job, tmp_path / "absent")
    assert r.returncode == 2, r.stderr
    assert f"sluice: input '{tmp_path / 'absent'}': No such file or directory\n" in r.stderr, \
        r.stderr


@pytest.mark.parametrize("columns", ['["price:decimal(10,2)", "image"]', "'price:decimal(10, 2),image'"])
def test_a_job_file_declares_a_decimal_column(sluice, tmp_path, columns):
    """output.columns "price:decimal(10,2)", as a list's item or in the
    flags' comma form (which split it into 'price:decimal(10' and '2)'),
    writes price as decimal128(10,2), each manifest number exactly; a
    decimal no Parquet DECIMAL is exits 2 in config check, naming the
    key and the range."""
    from decimal import Decimal
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(sample_images()[0]), "price": 19.9}) + "\n" +
                        json.dumps({"image": str(sample_images()[0]), "price": "7"}) + "\n")
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(f"input:\n  paths: [{json.dumps(str(manifest))}]\npipeline:\n  dry_run: true\n"
                   f"output:\n  dir: {json.dumps(str(out))}\n  format: parquet\n  columns: {columns}\n"
                   "metrics:\n  addr: \"off\"\n")
    r = sluice.run("run", job, "-q")
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out / "part-00000.parquet")
    assert got.column_names[-2:] == ["price", "image"], got.schema
    assert got.schema.field("price").type == pa.decimal128(10, 2), got.schema
    assert sorted(got.column("price").to_pylist()) == [Decimal("7.00"), Decimal("19.90")]
    job.write_text(job.read_text().replace("decimal(10", "decimal(40"))
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stderr
    assert "output.columns: column 'price:decimal(40" in r.stderr, r.stderr
    assert "decimal(P,S) takes a precision P of 1..38 digits" in r.stderr, r.stderr


@pytest.mark.parametrize("text, said", [
    ("sampling: {n: 4}\n", "1:12: unknown key 'n' in sampling; did you mean 'samples' (vLLM's and "
     "OpenAI's n)?"),
    ("sampling.guided_json: s.json\n", "1:1: unknown section or key 'sampling.guided_json'; did you "
     "mean 'sampling.json_schema' (json_schema under sampling: vLLM's guided_json)?"),
    ("llama: {max_model_len: 4096}\n", "did you mean 'ctx' (vLLM's max_model_len)?"),
    ("batch_size: 64\n", "did you mean 'llama.parallel' (parallel under llama: Ray Data LLM's "
     "batch_size)?"),
    ("sampling: {repetition_penalty: 1.1}\n", "did you mean 'repeat_penalty' (vLLM's "
     "repetition_penalty)?"),
])
def test_another_tools_name_for_a_key_is_told_the_key(sluice, tmp_path, text, said):
    """A job moved from Ray Data LLM or vLLM names their settings first:
    `sampling: {n: 4}` or `max_model_len` got only the list of the section's
    keys, no hint that vLLM's n is samples here or max_model_len ctx. Such a
    name is told the key (and whose name it was), and still refused."""
    job = tmp_path / "job.yaml"
    job.write_text(text)
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"sluice: {job}:") and said in r.stderr, r.stderr


@pytest.mark.parametrize("text, said", [
    ("sampling: {min_tokens: 4}\n", "1:12: unknown key 'min_tokens' in sampling; vLLM's "
     "min_tokens: sluice has no such setting; an answer ends at the model's end token, and "
     "--max-tokens bounds it from above only; allowed: max_tokens,"),
    ("sampling.stop_token_ids: [2]\n", "1:1: unknown section or key 'sampling.stop_token_ids'; "
     "vLLM's stop_token_ids: sluice has no such setting; give the tokens' text as --stop "
     "(sampling.stop); allowed:"),
])
def test_another_tools_setting_sluice_lacks_is_told_what_to_do(sluice, tmp_path, text, said):
    """vLLM's min_tokens was told "did you mean 'max_tokens'?", the
    opposite setting (one edit away); stop_token_ids nothing at all. A
    setting sluice lacks is named as such, with what to do instead."""
    job = tmp_path / "job.yaml"
    job.write_text(text)
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"sluice: {job}:{said}"), r.stderr
