"""C plugin stages end to end (docs/stages.md, sluice/plugin.h): the example
job examples/tags-plugin.yaml runs on the tiny model and its tags are the
rule's (computed here in Python from the same run's captions without the
stage), rows with short answers dropped; a plugin the loader refuses (another
ABI version, a file that does not load) or whose init() refuses its config
stops the command with exit 2 and a message naming the file and what to do;
the plugin and the Lua example examples/tags.lua give the same rows. The
plugins are those of the build under test (next to SLUICE_BIN)."""
import json
import pathlib
import re
import subprocess

from conftest import REPO, SAMPLES, TINY, read_rows, sample_images

COMMON = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf", "--parallel", "1",
          "--max-tokens", "24", "--ordered", "--metrics-addr", "off", "--show", "0")


def build_dir(sluice) -> pathlib.Path:
    return pathlib.Path(sluice.binary).resolve().parent


def tags_plugin(sluice) -> pathlib.Path:
    path = build_dir(sluice) / "examples" / "plugins" / "libsluice_tags.so"
    assert path.exists(), f"{path} not built"
    return path


STOPWORDS = REPO / "examples" / "stopwords.txt"


def stopwords() -> set[bytes]:
    lines = (w.split(b"#")[0].strip().lower() for w in STOPWORDS.read_bytes().splitlines())
    return {w for w in lines if w}


def rule(caption: str, stop: set[bytes]) -> list[str]:
    """The tags rule of docs/stages.md, on the caption's UTF-8 bytes."""
    out = []
    for w in re.split(rb"[^a-z0-9]+", caption.encode().lower()):
        if len(w) >= 3 and w not in stop and w.decode() not in out:
            out.append(w.decode())
    return out[:16]


def baseline(sluice, tmp_path):
    """The same job without the stage: every caption."""
    r = sluice.caption(SAMPLES, tmp_path / "plain", *COMMON[4:],
                       "--prompt", "Describe this image in one sentence.", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    return {row["id"]: row["caption"] for row in read_rows(tmp_path / "plain")}


def check_tags(rows, captions, min_length):
    """min_length counts characters, or bytes where the answer was not
    UTF-8: the output's caption has U+FFFD there, so the plugin's count lies
    between the caption's characters and its UTF-8 bytes."""
    stop = stopwords()
    kept = {row["id"] for row in rows}
    surely = {i for i, c in captions.items() if len(c) >= min_length}
    maybe = {i for i, c in captions.items() if len(c.encode()) >= min_length}
    assert surely <= kept <= maybe
    for row in rows:
        assert row["caption"] == captions[row["id"]]
        assert row["tags"] == rule(row["caption"], stop), row
    return len(captions) - len(kept)


def test_the_example_job_tags_captions_and_drops_short_ones(sluice, tmp_path):
    captions = baseline(sluice, tmp_path)
    assert len(captions) == len(sample_images())
    # The job file as written, run where its relative paths hold (the
    # repository's layout, with this build's plugin).
    cwd = tmp_path / "repo"
    (cwd / "build" / "examples" / "plugins").mkdir(parents=True)
    (cwd / "build" / "examples" / "plugins" / "libsluice_tags.so").symlink_to(tags_plugin(sluice))
    (cwd / "samples").symlink_to(SAMPLES)
    (cwd / "examples").symlink_to(REPO / "examples")
    out = tmp_path / "tags"
    r = subprocess.run([str(pathlib.Path(sluice.binary).resolve()), "run", str(REPO / "examples" / "tags-plugin.yaml"),
                        "-o", str(out), *map(str, COMMON)], cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    dropped = check_tags(read_rows(out), captions, 20)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["dropped"] == dropped


def test_a_stage_given_on_the_command_line_with_its_config(sluice, tmp_path):
    captions = baseline(sluice, tmp_path)
    # About half the rows dropped, no caption on the fence (see check_tags).
    lengths = sorted(len(c) for c in captions.values())
    fences = [m for m in range(lengths[0] + 1, lengths[-1] + 1)
              if all((len(c) >= m) == (len(c.encode()) >= m) for c in captions.values())]
    assert fences, lengths
    min_length = min(fences, key=lambda m: abs(m - lengths[len(lengths) // 2]))
    stage = {"plugin": str(tags_plugin(sluice)), "after": "engine", "workers": 3,
             "batch_size": 1, "config": {"stopwords": str(STOPWORDS),
                                         "min_length": min_length}}
    out = tmp_path / "tags"
    r = sluice.caption(SAMPLES, out, *COMMON[4:], "--prompt", "Describe this image in one "
                       "sentence.", "--temperature", "0", "--stage", json.dumps(stage))
    assert r.returncode == 0, r.stderr
    dropped = check_tags(read_rows(out), captions, min_length)
    assert 0 < dropped < len(captions)
    # The rerun: every input is done, the dropped ones too.
    again = sluice.caption(SAMPLES, out, *COMMON[4:], "--prompt", "Describe this image in one "
                           "sentence.", "--temperature", "0", "--stage", json.dumps(stage))
    assert again.returncode == 0, again.stderr
    assert "all inputs were already done" in again.stdout, again.stdout + again.stderr


def test_a_plugin_that_cannot_run_is_exit_2_naming_the_file(sluice, tmp_path):
    plugins = build_dir(sluice) / "tests" / "unit"
    wrong_abi = plugins / "libtest_plugin_abi999.so"
    not_so = tmp_path / "notaplugin.so"
    not_so.write_text("not an ELF file\n")
    cases = [
        (f"{wrong_abi}@engine", [str(wrong_abi), "built for plugin ABI version 999",
                                 "rebuild the plugin against this sluice's sluice/plugin.h"]),
        (f"{plugins / 'libtest_plugin_noentry.so'}", ["has no function sluice_plugin()"]),
        (f"{not_so}@read", [str(not_so), "does not load"]),
        (f"{tmp_path / 'missing.so'}", ["missing.so", "does not load"]),
        (json.dumps({"plugin": str(tags_plugin(sluice)), "after": "engine",
                     "config": {"stopwords": str(tmp_path / "nowords.txt")}}),
         ["stopwords file", "nowords.txt", "No such file"]),
    ]
    for stage, words in cases:
        r = sluice.caption(SAMPLES, tmp_path / "out", *COMMON[4:], "--stage", stage)
        assert r.returncode == 2, (stage, r.stdout, r.stderr)
        for w in words:
            assert w in r.stderr, (stage, w, r.stderr)
    # config check loads the plugin too, without running anything.
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{paths: [{SAMPLES}]}}\noutput: {{dir: {tmp_path / 'o2'}}}\n"
                   f"llama: {{model: m.gguf, mmproj: p.gguf}}\n"
                   f"pipeline: {{stages: [{{plugin: {wrong_abi}, after: engine}}]}}\n")
    r = sluice.run("config", "check", job)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "rebuild the plugin against this sluice's sluice/plugin.h" in r.stderr, r.stderr
    assert not (tmp_path / "o2").exists()


def test_the_plugin_and_the_lua_example_give_the_same_rows(sluice, tmp_path):
    """The same rule (docs/stages.md), the same rows: tags, drops and all."""
    lua = REPO / "examples" / "tags.lua"
    config = {"stopwords": str(STOPWORDS), "min_length": 40}
    outs = {}
    for kind, path in (("lua", lua), ("plugin", tags_plugin(sluice))):
        stage = {kind: str(path), "after": "engine", "workers": 2, "config": config}
        out = tmp_path / kind
        r = sluice.caption(SAMPLES, out, *COMMON[4:], "--stage", json.dumps(stage))
        assert r.returncode == 0, (kind, r.stderr)
        outs[kind] = [(row["id"], row["caption"], row["tags"]) for row in read_rows(out)]
        outs[kind + " dropped"] = json.loads((out / "_summary.json").read_text())["rows"]["dropped"]
    assert outs["plugin"] == outs["lua"]
    assert outs["plugin dropped"] == outs["lua dropped"]
    assert outs["plugin"], "every row was dropped: the comparison compared nothing"


def test_a_plugin_reads_answers_tasks_and_logprobs(sluice, four, tmp_path):
    """The host table's later functions (tests/plugins/answers.c after the
    engine): with --samples every answer in order, with tasks a task's
    answer and log-probabilities, each equal to what the output holds."""
    plugin = build_dir(sluice) / "tests" / "unit" / "libtest_plugin_answers.so"
    assert plugin.exists(), f"{plugin} not built"
    common = ("--max-tokens", "6", "--temperature", "0.9", "--metrics-addr", "off", "--show", "0")
    res = sluice.caption(four, tmp_path / "samples", *common, "--samples", "2", "--logprobs", "2",
                         "--stage", f"{plugin}@engine")
    assert res.returncode == 0, res.stderr
    rows = read_rows(tmp_path / "samples")
    by_image = {}
    for r in rows:
        by_image.setdefault(r["id"], {})[r["sample"]] = r["caption"]
    for r in rows:
        assert r["answers"] == [by_image[r["id"]][0], by_image[r["id"]][1]]
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"yes_no": {"prompt": "Is there a person?",
                                            "sampling": {"max_tokens": 3, "logprobs": 3}},
                                 "short": {"prompt": "Describe it.",
                                           "sampling": {"max_tokens": 4}}}))
    stage = json.dumps({"plugin": str(plugin), "after": "engine", "config": {"task": "yes_no"}})
    res = sluice.caption(four, tmp_path / "tasks", *common, "--tasks", tasks, "--stage", stage)
    assert res.returncode == 0, res.stderr
    for r in read_rows(tmp_path / "tasks"):
        assert r["answers"] == [r["yes_no"], r["short"]]
        assert r["task_answer"] == r["yes_no"]
        assert r["logprobs_copy"] == r["yes_no_logprobs"]
