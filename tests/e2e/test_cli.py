"""The command line against its own --help and the docs, and the edges of
its flags: a wrong value is exit 2 before anything runs, with a message
naming the flag, the value and what to change."""
import re
import socket
import subprocess

import pytest

from conftest import SAMPLES, TINY, sample_images


def test_an_errors_file_that_names_no_file_stops_before_the_run(sluice, tmp_path):
    """--errors-file is written when the run ends: '' or a folder's 'dir/'
    (no file in either) failed only then, exit 1 after every row was run."""
    for errs in ("", f"{tmp_path}/errors/"):
        out = tmp_path / "out"
        r = sluice.caption(SAMPLES, out, "--max-tokens", "2", "--metrics-addr", "off",
                           "--errors-file", errs)
        assert r.returncode == 2, r.stderr
        assert f"--errors-file '{errs}' names no file" in r.stderr, r.stderr
        assert not out.exists(), "the run should not have started"


# --- --help, `config keys` and the docs in step ----------------------------------------

REPO = SAMPLES.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def parser_flags(sluice):
    """{flag: key} from `config keys`: the settings table the parser is made
    from, so exactly the flags it takes (with --help and --version)."""
    r = sluice.run("config", "keys")
    assert r.returncode == 0, r.stderr
    flags = {}
    for line in r.stdout.splitlines():
        key, rest = line.split(None, 1)
        m = FLAG.search(rest.split("  ")[0])  # the flag column, before the help
        if m:
            flags[m.group()] = key
    assert len(flags) > 100, r.stdout
    return flags


def help_options(text, whole=False):
    """{flag: its help text}: each option line (indented 2 or 6, its flags
    before the first gap then a word) with the lines under it; `whole`:
    the option line whole (its flags and argument too)."""
    options, current = {}, []
    for line in text.splitlines():
        m = re.match(r"^(?:  -[a-zA-Z], |      )(--.*)$", line)
        if m:
            head = re.split(r"\s{2,}(?=[^-\s])", m.group(1), maxsplit=1)
            current = FLAG.findall(head[0])
            for f in current:
                options[f] = m.group(1) if whole else head[1] if len(head) > 1 else ""
        elif line.startswith(" " * 28) and current:
            for f in current:
                options[f] += " " + line.strip()
        else:
            current = []
    return options


def test_help_lists_every_flag_the_parser_takes_and_no_other(sluice):
    flags = parser_flags(sluice)
    for command in (("--help",), ("caption", "--help"), ("batch", "--help"), ("run", "--help"),
                    ("config", "check", "--help")):
        r = sluice.run(*command)
        assert r.returncode == 0, (command, r.stderr)
        listed = set(help_options(r.stdout)) - {"--help", "--version"}
        assert listed == set(flags), (
            command, "on an option line but not taken:", sorted(listed - set(flags)),
            "taken but without an option line:", sorted(set(flags) - listed))
    # Every command's --help is its usage, on stdout, exit 0 ('config keys
    # --help' was "config keys takes no arguments, got '--help'", exit 2).
    for command in ("caption", "batch", "run", "config", "config print", "config check",
                    "config keys"):
        for h in ("--help", "-h"):
            r = sluice.run(*command.split(), h)
            assert r.returncode == 0 and r.stdout.startswith("usage: sluice "), (command, h,
                                                                                 r.stderr)
    # Each listed flag is taken by each command that lists it, --version too.
    for command in ("caption", "batch", "run", "config"):
        args = (command, "--version") if command != "config" else ("config", "print", "--version")
        r = sluice.run(*args)
        assert r.returncode == 0 and r.stdout.startswith("sluice "), (args, r.stderr)


SIZE = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def number(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text)
    return None if not m else float(m.group(1)) * SIZE.get(m.group(2), 1)


def test_help_defaults_are_the_defaults(sluice):
    """A number after 'default' in --help is what `config print` shows for
    the flag's key when nothing is set."""
    flags = parser_flags(sluice)
    r = sluice.run("config", "print", "/dev/null")
    assert r.returncode == 0, r.stderr
    values, section = {}, ""
    for line in r.stdout.splitlines():
        m = re.match(r"^(\s*)([a-z_]+):\s*(.*?)\s*(?:#.*)?$", line)
        if m:
            section = m.group(2) if not m.group(1) else section
            key = m.group(2) if not m.group(1) else f"{section}.{m.group(2)}"
            values[key] = m.group(3).strip('"')
    # A default settled at run time prints as ~; `config keys` says it: "(~: 64M)".
    for line in sluice.run("config", "keys").stdout.splitlines():
        m = re.search(r"\(~: ([0-9][0-9.]*[KMG]?)[;,)]", line)
        if m and values.get(line.split()[0]) == "~":
            values[line.split()[0]] = m.group(1)
    checked = 0
    for flag, text in help_options(sluice.run("caption", "--help").stdout).items():
        m = re.search(r"\(default:? ([0-9][0-9.]*[KMG]?)[;,)]", text)
        if not m or flag not in flags or values[flags[flag]].startswith("["):
            continue  # a list's "default" is of its items' parts (--lora's scale)
        if flag == "--encoders" and values[flags[flag]] == "0":
            values[flags[flag]] = "1"  # 0 or 1: one encoder
        assert number(values[flags[flag]]) == number(m.group(1)), (flag, m.group(1),
                                                                   values[flags[flag]])
        checked += 1
    assert checked >= 20


def test_the_threads_default_says_replicas_share_the_cores(sluice):
    """Each replica gets the cores divided between --replicas (stage_engine.c,
    docs/engine.md); --help said "all cores", so two replicas looked like
    twice the machine's threads."""
    help_text = help_options(sluice.run("caption", "--help").stdout)["--threads"]
    assert "each replica" in help_text and "divided between --replicas" in help_text, help_text
    keys = sluice.run("config", "keys").stdout
    assert "the cores divided between replicas" in keys, keys


def test_the_job_file_key_table_is_every_key(sluice):
    """docs/jobs.md's 'Every key' table: each key with its flag, as `config
    keys` prints them: a flag added without a line there fails here."""
    table = (REPO / "docs" / "jobs.md").read_text().split("## Every key", 1)[1]
    documented = {}
    for line in table.splitlines():
        m = re.match(r"^\| `([a-z_.]+)` \| (.*?) \| ", line)
        if m:
            documented[m.group(1)] = m.group(2).replace("\\|", "|").strip("`")
    r = sluice.run("config", "keys")
    keys = {line[:29].strip(): line[29:60].strip() for line in r.stdout.splitlines()}
    assert documented == keys


def test_every_choice_of_a_flag_is_in_its_help_and_the_docs(sluice):
    """A flag that takes one of some names (its message when given another
    lists them) shows every name in --help, in `config keys` and in
    docs/jobs.md's row: --input-format took arrow and openai-batch, --format
    openai-batch, while --help or the docs left them out."""
    blocks = help_options(sluice.run("caption", "--help").stdout, whole=True)
    doc = (REPO / "docs" / "jobs.md").read_text().split("## Every key", 1)[1]
    rows = {m.group(1): line for line in doc.splitlines()
            if (m := re.match(r"^\| `([a-z_.]+)` \|", line))}
    keys = {line.split()[0]: line for line in sluice.run("config", "keys").stdout.splitlines()}
    # "KV cache type of V, the same types": K's list
    same = {"--cache-type-v": "--cache-type-k"}
    word = r"(?<![\w-]){}(?![\w-])"
    checked = 0
    for flag, key in parser_flags(sluice).items():
        r = sluice.run("config", "print", "/dev/null", f"{flag}=no@such@name")
        m = re.search(r"expects one of (.*?); got", r.stderr)
        if not m:
            continue
        for choice in m.group(1).split(", "):
            where = {"--help": blocks[same.get(flag, flag)], "config keys": keys[key],
                     "docs/jobs.md": rows[key]}
            if flag in same:
                where["config keys"] += keys[parser_flags(sluice)[same[flag]]]
                where["docs/jobs.md"] += rows[parser_flags(sluice)[same[flag]]]
            for name, text in where.items():
                assert re.search(word.format(re.escape(choice)), text), (name, flag, choice, text)
            checked += 1
    assert checked > 30


def test_sluice_command_lines_in_the_docs_use_flags_it_takes(sluice):
    """Every flag on a `sluice ...` command line in README.md and docs/ (code
    blocks, with their continuation lines) is one the parser takes."""
    known = set(parser_flags(sluice)) | {"--help", "--version"}
    unknown, seen = [], 0
    for doc in DOCS:
        in_code, command = False, False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code, command = not in_code, False
                continue
            if not in_code:
                continue
            start = re.search(r"(^|[\s/])sluice (caption|run|batch|config)\b", line)
            if start:  # what comes before is another program's (mpirun -n 16 ...)
                command, line = True, line[start.end():]
            if command:
                code = line.split(" #")[0]
                for flag in FLAG.findall(re.sub(r"'[^']*'|\"[^\"]*\"", "", code)):
                    seen += 1
                    if flag not in known:
                        unknown.append(f"{doc.name}:{n}: {flag}")
                command = code.rstrip().endswith("\\")
    assert seen > 50 and not unknown, unknown


def test_servers_named_without_engine_openai_are_refused(sluice, tmp_path):
    """--endpoint without --engine openai: the llama engine (the default)
    ran, saying only that a model was missing, or with one ignoring the
    servers. Now exit 2 saying to add --engine openai; an engine set to
    llama on purpose (over a job file's openai) still runs."""
    r = sluice.run("caption", SAMPLES, "-o", tmp_path / "o", "--endpoint", "http://127.0.0.1:1")
    assert r.returncode == 2 and "add --engine openai" in r.stderr, r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "o", "--endpoint", "http://127.0.0.1:1")
    assert r.returncode == 2 and "add --engine openai" in r.stderr, r.stderr
    # Both on one command line: the servers went unused, and nothing said so.
    r = sluice.caption(SAMPLES, tmp_path / "o", "--engine", "llama", "--endpoint",
                       "http://127.0.0.1:1")
    assert r.returncode == 2 and "--engine llama runs the model in this process: drop one" \
        in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    job = tmp_path / "job.yaml"
    job.write_text(f"openai:\n  endpoints: [http://127.0.0.1:1]\ninput:\n  paths: [{SAMPLES}]\n"
                   f"output:\n  dir: {tmp_path / 'o'}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and "add engine: openai" in r.stderr, r.stderr
    r = sluice.run("config", "check", job, "--engine", "openai")
    assert r.returncode == 0, r.stderr
    r = sluice.run("config", "check", job, "--engine", "llama", "--model", "m.gguf",
                   "--mmproj", "p.gguf")
    assert r.returncode == 0, r.stderr


def test_an_empty_metrics_address_is_refused_not_taken_as_off(sluice, tmp_path):
    """--metrics-addr '' (an unset "$ADDR") served nothing and said
    nothing; 'off' is how to say that."""
    r = sluice.caption(SAMPLES, tmp_path / "o", "--metrics-addr", "")
    assert r.returncode == 2, r.stderr
    assert "--metrics-addr expects HOST:PORT" in r.stderr and "or off, got ''" in r.stderr
    job = tmp_path / "job.yaml"
    job.write_text('metrics:\n  addr: ""\n')
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and "metrics.addr expects HOST:PORT" in r.stderr, r.stderr


def test_an_empty_model_or_projector_is_refused_by_config_check_too(sluice, tmp_path):
    """--model '' (an unset "$MODEL") passed config check (exit 0) and
    the run stopped with "--model is required"; --mmproj '' beside an
    hf:// model was taken as not given, the hub's projector fetched."""
    for flags, said in ((("--model", "", "--mmproj", "p.gguf"), "--model is empty: give PATH"),
                        (("--model", "hf://org/repo", "--mmproj", ""),
                         "--mmproj is empty: give PATH")):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o", *flags)
        assert r.returncode == 2 and said in r.stderr, r.stderr
    job = tmp_path / "job.yaml"
    job.write_text('llama:\n  model: ""\n')
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and f"{job}:2:10: llama.model is empty" in r.stderr, r.stderr


def test_a_metrics_address_the_server_would_refuse_is_refused_when_read(sluice, tmp_path):
    """--metrics-addr 127.0.0.1:99999 passed config check (exit 0); the
    run then stopped at its start on the port. Now refused when read, by
    the server's own check, naming the flag or the key at its line."""
    for addr, said in (("127.0.0.1:99999", 'the port "99999" is not a number from 0 to 65535'),
                       ("::1:9797", "write an IPv6 host in brackets")):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o", "--model",
                       "m.gguf", "--mmproj", "p.gguf", "--metrics-addr", addr)
        assert r.returncode == 2, r.stderr
        assert f'--metrics-addr: metrics address "{addr}": {said}' in r.stderr, r.stderr
    job = tmp_path / "job.yaml"
    job.write_text('metrics:\n  addr: "x:70000"\n')
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and f"{job}:2:9: metrics.addr: metrics address" in r.stderr, r.stderr
    for addr in ("[::1]:0", "127.0.0.1:0", ":0", "off"):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o", "--model",
                       "m.gguf", "--mmproj", "p.gguf", "--metrics-addr", addr)
        assert r.returncode == 0, (addr, r.stderr)


def test_batch_takes_no_other_input_format(sluice, tmp_path):
    """sluice batch F --input-format csv ran F as a caption job's CSV
    manifest (exit 0, no requests answered); batch reads batch files."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
                        '"body": {"messages": [{"role": "user", "content": "hi"}]}}\n')
    for fmt in ("csv", "jsonl", "auto"):
        r = sluice.run("batch", requests, "-o", tmp_path / "o", "--model", "m.gguf",
                       "--input-format", fmt, "--metrics-addr", "off")
        assert r.returncode == 2, r.stderr
        assert f"--input-format {fmt} does not apply" in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()


def test_a_switch_given_a_separate_word_says_to_use_equals(sluice, tmp_path):
    """--ordered false: getopt leaves 'false' as an INPUT, reported as a
    missing input 'false'; the message now names the switch and =false."""
    for args in (("--ordered", "false"), ("-q", "true"), ("--overwrite", "false")):
        r = sluice.caption(SAMPLES, tmp_path / "o", *args)
        assert r.returncode == 2, r.stderr
        assert f"{args[0]} {args[1]}: a switch takes its value after '='" in r.stderr, r.stderr
    r = sluice.caption(SAMPLES, tmp_path / "o", "--prompt", "false", "--metrics-addr", "off",
                       "--max-tokens", "2", "--limit", "1")
    assert r.returncode == 0, r.stderr  # a value that reads false is a value


def test_a_short_flag_given_an_equals_says_how_it_takes_a_value(sluice, tmp_path):
    """-n=5 was refused as "--max-tokens ... got '=5'" and -q=true as
    "unknown option '-='", neither saying that a short flag takes no '='.
    Now each names the short flag and its long form with '=', and the word
    the '=' is in (after a word ending in '=', "-p -x= -q=1" was "unknown
    option '-='"), with no long form for an empty value ("--quiet=" would be
    refused too)."""
    for args, said in ((("-n=5",), "-n=5: -n takes its value as -n 5 (or --max-tokens=5)"),
                       (("-qn=7",), "-qn=7: -n takes its value as -n 7 (or --max-tokens=7)"),
                       (("-p=hi",), "-p=hi: -p takes its value as -p hi (or --prompt=hi)"),
                       (("-q=true",), "-q=true: -q takes no value: give -q alone, or "
                                      "--quiet=true"),
                       (("-vq=false",), "-vq=false: -q takes no value: give -q alone, or "
                                        "--quiet=false"),
                       (("-p", "-x=", "-q=1"), "-q=1: -q takes no value: give -q alone, or "
                                               "--quiet=1"),
                       # no "--quiet=": an empty value is refused there too
                       (("-q=", "-v=1"), "-q=: -q takes no value: give -q alone")):
        # the flags first: getopt moves the words between them, and a word
        # ending in '=' just before the flag's (-p's "-x=") was taken for it
        r = sluice.run("config", "check", *args, "/dev/null", SAMPLES, "-o", tmp_path / "o")
        assert r.returncode == 2, (args, r.stdout)
        assert f"sluice: {said}\n" in r.stderr, (args, r.stderr)
    # A value of its own word is the user's, '=' and all.
    r = sluice.run("config", "print", "/dev/null", "-p", "=x", "-n", "5", "-q")
    assert r.returncode == 0 and '\n  text: "=x"' in r.stdout, r.stderr


def test_crossed_image_token_limits_name_both_flags(sluice, tmp_path):
    """--image-min-tokens above --image-max-tokens reached libmtmd as given:
    the projector failed to load and the message blamed --mmproj."""
    r = sluice.caption(SAMPLES, tmp_path / "o", "--image-min-tokens", "100",
                       "--image-max-tokens", "10", "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "--image-min-tokens 100 is above --image-max-tokens 10" in r.stderr, r.stderr
    assert "--mmproj" not in r.stderr


def test_config_keys_takes_no_arguments(sluice):
    """'sluice config keys model' printed every key, the word ignored, as
    if it had filtered them."""
    r = sluice.run("config", "keys", "model")
    assert r.returncode == 2 and "config keys takes no arguments, got 'model'" in r.stderr
    assert sluice.run("config", "keys").returncode == 0


def test_numbers_are_decimal(sluice, tmp_path):
    """strtod took '0x10' (16 s) and strtol/strtod a leading blank (' 8'):
    taken in silence as numbers nobody wrote. Each flag kind refuses them,
    naming the flag and the value; 1e3 stays a number where one is taken."""
    for flag, value, expects in (("--download-timeout", "0x10", "a number"),
                                 ("--request-timeout", "inf", "a number"),
                                 ("--max-tokens", " 8", "an integer"),
                                 ("--memory-budget", "0x100000", "a size"),
                                 ("--max-failed", " 0.5", "a fraction"),
                                 ("--max-tokens", "8x", "an integer"),
                                 ("--seed", "9223372036854775808", "an integer"),
                                 ("--max-tokens", "1e3", "an integer")):
        r = sluice.run("config", "print", "/dev/null", flag, value)
        assert r.returncode == 2, (flag, value, r.stdout)
        assert f"{flag} expects {expects}" in r.stderr and f"got '{value}'" in r.stderr, r.stderr
    r = sluice.run("config", "print", "/dev/null", "--download-timeout", "1e3")
    assert r.returncode == 0 and "download_timeout: 1000 " in r.stdout, r.stderr


def test_a_flag_is_taken_by_its_whole_name_only(sluice, tmp_path):
    """getopt_long took any unambiguous beginning of a flag: --temp 0.5
    was --temperature 0.5, undocumented, and a script written so would change
    meaning (or stop) the day a flag sharing that beginning is added. Now
    exit 2 naming the whole flag, however the value is given; whole names
    still work, beside INPUT arguments and values that look like flags."""
    for args, full in ((("--temp", "0.5"), "--temperature"), (("--temp=0.5",), "--temperature"),
                       (("--overwr",), "--overwrite"), (("--ordered=false", "--verb"), "--verbose"),
                       (("--hel",), "--help"), (("--prompt", "x", "--syst=y"), "--system")):
        r = sluice.run("config", "print", "/dev/null", *args)
        assert r.returncode == 2, (args, r.stdout)
        assert f"did you mean {full}?" in r.stderr, (args, r.stderr)
    r = sluice.caption(SAMPLES, tmp_path / "o", "--max-image-e", "5")
    assert r.returncode == 2 and "did you mean --max-image-edge?" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    r = sluice.run("config", "print", "/dev/null", "in", "--max-tokens", "5", "--overwrite",
                   "--ordered=false", "--prompt", "--max-tok", "--frame-text=")
    assert r.returncode == 0, r.stderr
    assert "max_tokens: 5" in r.stdout and 'text: "--max-tok"' in r.stdout, r.stdout


@pytest.mark.parametrize("args, said", [
    (("--top_p", "0.9"), "unknown option '--top_p': did you mean --top-p?\n"),
    (("--max_tokens=5",), "unknown option '--max_tokens': did you mean --max-tokens?\n"),
    (("--n", "4"), "unknown option '--n': did you mean --samples (vLLM's and OpenAI's n)?\n"),
    (("--max-model-len", "4096"), "unknown option '--max-model-len': did you mean --ctx (vLLM's "
     "max_model_len)?\n"),
    (("--guided-choice", "a,b"), "unknown option '--guided-choice': did you mean --choices "
     "(vLLM's guided_choice)?\n"),
    (("--concurrency", "2"), "unknown option '--concurrency': did you mean --replicas (Ray Data "
     "LLM's concurrency)?\n"),
    # vLLM's settings sluice lacks: what to do instead (--min-tokens was "unknown option" alone)
    (("--min-tokens", "5"), "unknown option '--min-tokens': vLLM's min_tokens: sluice has no such "
     "setting; an answer ends at the model's end token, and --max-tokens bounds it from above "
     "only\n"),
    (("--best_of", "4"), "unknown option '--best_of': vLLM's best_of: sluice has no such "
     "setting; --samples N (sampling.samples) writes N answers, a row each; a stage may keep "
     "the best\n"),
    (("--stop-token-ids", "2"), "unknown option '--stop-token-ids': vLLM's stop_token_ids: sluice "
     "has no such setting; give the tokens' text as --stop (sampling.stop)\n"),
    (("--guided-regex", "[0-9]+"), "unknown option '--guided-regex': vLLM's guided_regex: sluice "
     "has no such setting; write the pattern as a GBNF grammar: --grammar (sampling.grammar), "
     "llama engine\n"),
])
def test_a_flag_written_as_another_tool_writes_it_is_told_ours(sluice, args, said):
    """--top_p (a job file's key, Python's keyword) and vLLM's or Ray Data
    LLM's names (--n, --max-model-len, --concurrency) were "unknown option"
    and no more. Now the flag meant is named; the command still stops."""
    r = sluice.run("config", "print", "/dev/null", *args)
    assert r.returncode == 2 and r.stderr.startswith(f"sluice: {said}"), (args, r.stderr)


def test_a_flag_beginning_several_names_is_named_as_the_flag(sluice):
    """--max-tok begins --max-tokens and --max-tokens-field: getopt said
    "print: option '--max-tok' is ambiguous; possibilities: ..." (the
    subcommand's word for the program) and the "did you mean" was skipped.
    Now the flag and every whole name it begins, for a subcommand as for
    caption; getopt's other messages are said in the same terms."""
    for cmd in (("config", "print", "/dev/null"), ("caption", "in", "-o", "out")):
        r = sluice.run(*cmd, "--max-tok", "5")
        assert r.returncode == 2, r.stdout
        assert r.stderr.startswith("sluice: unknown option '--max-tok': did you mean "
                                   "--max-tokens-field or --max-tokens? (flags are taken by their "
                                   "whole name)\n"), r.stderr
        assert "ambiguous" not in r.stderr, r.stderr
    for args, said in ((("--model",), "option '--model' needs a value"),
                       (("--nosuch",), "unknown option '--nosuch'\n"),
                       (("-Z",), "unknown option '-Z'"),
                       (("--help=1",), "option '--help' takes no value")):
        r = sluice.run("config", "print", "/dev/null", *args)
        assert r.returncode == 2 and r.stderr.startswith(f"sluice: {said}"), (args, r.stderr)


def test_an_empty_value_that_can_only_be_a_mistake_is_refused(sluice, tmp_path):
    """'' (an unset "$VAR") was taken in silence as the default by these:
    --system '' sent the chat template's own system message (no prompt
    was meant), --chat-template '' the model's template, --prompt-column ''
    a column no row has, --api-key-env '' no key. Now exit 2 naming the
    setting, on the command line and in a job file; '' where it means
    something (--frame-text: none) is still taken."""
    for flag in ("--system", "--chat-template", "--prompt-column", "--served-model",
                 "--api-key-env", "--api-key-header", "--image-column", "--image-placeholder",
                 "--state-dir"):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o",
                       "--model", "m.gguf", "--mmproj", "p.gguf", flag, "")
        assert r.returncode == 2, (flag, r.stdout)
        assert f"{flag} is empty: give " in r.stderr and "leave it out for the default" \
            in r.stderr, (flag, r.stderr)
    job = tmp_path / "job.yaml"
    job.write_text('prompt:\n  system: ""\n')
    r = sluice.run("config", "check", job)
    assert r.returncode == 2 and "prompt.system is empty" in r.stderr, r.stderr
    # A job file's prompt.text "" was told "the prompt is empty (--prompt)",
    # a flag the file does not have, and only once a model was given.
    job.write_text('prompt:\n  text: ""\n')
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stderr
    assert "job.yaml:2:9: prompt.text is empty: give TEXT" in r.stderr, r.stderr
    for flag in ("--frame-text", "--image-text"):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o",
                       "--model", "m.gguf", "--mmproj", "p.gguf", flag, "")
        assert r.returncode == 0, (flag, r.stderr)


def test_an_empty_item_of_a_comma_list_is_refused(sluice, tmp_path):
    """--columns a,,b passed columns a and b and --choices yes,no, the
    choices yes and no: the empty item was skipped in silence, though an
    empty list item is refused (as --gpus 0,,1 is). Now exit 2 naming the
    setting and the value, on the command line and in a job file."""
    for flag, value in (("--columns", "a,,b"), ("--columns", "a,b,"), ("--columns", ",a"),
                        ("--columns", "a, ,b"), ("--choices", "yes,no,"),
                        ("--choices", "yes,,no"), ("--gpus", "0,,1"),
                        ("--image-column", "a,,b")):
        r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o",
                       "--model", "m.gguf", "--mmproj", "p.gguf", flag, value)
        assert r.returncode == 2, (flag, value, r.stdout)
        assert flag in r.stderr and f"'{value}'" in r.stderr, (flag, value, r.stderr)
    job = tmp_path / "job.yaml"
    for key, text, value in (("output.columns", "output:\n  columns: a,,b\n", "a,,b"),
                             ("sampling.choices", "sampling:\n  choices: 'x, y,'\n", "x, y,")):
        job.write_text(text)
        r = sluice.run("config", "check", job)
        assert r.returncode == 2, (key, r.stdout)
        assert f"job.yaml:2:12: {key} takes A,B,... with no empty item" in r.stderr \
            and f"got '{value}'" in r.stderr, (key, r.stderr)
    r = sluice.run("config", "check", "/dev/null", SAMPLES, "-o", tmp_path / "o", "--model",
                   "m.gguf", "--mmproj", "p.gguf", "--columns", "a, b", "--choices", "yes,no")
    assert r.returncode == 0, r.stderr


def test_each_line_to_stderr_is_one_write(sluice, tmp_path):
    """stderr was unbuffered and a line went out a character at a time:
    under mpirun, where every rank's stderr is forwarded to one, two ranks'
    warnings came out mixed letter by letter ("rank rank 2 has heard
    nothin1g"). Now each line is one write. A SOCK_SEQPACKET socket as
    stderr keeps each write apart: every one must be whole lines, over a
    warning, failed rows' lines and the progress lines."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sample_images()[:2]:
        (inputs / p.name).symlink_to(p)
    for i in range(3):
        (inputs / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        with theirs:
            proc = subprocess.Popen(
                [str(sluice.binary), "caption", str(inputs), "-o", str(tmp_path / "out"),
                 "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                 "--max-tokens", "2", "--metrics-addr", "off", "--samples", "2",
                 "--progress-every", "0.1"],
                stdout=subprocess.DEVNULL, stderr=theirs)
        writes = []
        while True:
            chunk = ours.recv(1 << 20)
            if not chunk:
                break
            writes.append(chunk.decode())
    assert proc.wait(timeout=300) == 3, "".join(writes)  # 3: rows failed
    text = "".join(writes)
    assert "--samples 2 at temperature 0" in text and text.count("broken") >= 3, text
    assert "progress: " in text, text
    torn = [w for w in writes if not w.endswith("\n")]
    assert not torn, (len(writes), torn[:10])
