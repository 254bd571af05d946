"""What a researcher needs to build a dataset again and to compare two runs
of it (docs/output.md, "The run report" and "Comparing two runs (A/B)";
docs/engine.md, "Batched vs alone"): _summary.json names the sluice, the
engine and the model files that made the rows; sampled rows are drawn
alike in one run, over input shards and across a resume; two runs over
the same inputs with other prompts hold the same ids, joined by DuckDB."""
import json
import os
import subprocess

import pytest

from conftest import REPO, SAMPLES, TINY, sample_images

QUIET = ("--max-tokens", "3", "--show", "0", "--metrics-addr", "off")


def summary(out):
    return json.loads((out / "_summary.json").read_text())


def read_rows(out):
    """Every part's rows (a resumed run writes a part of its own)."""
    return [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text(encoding="utf-8").splitlines()]


def test_the_summary_names_the_model_files_the_engine_and_the_version(sluice, sluice_bin,
                                                                      llama_prefix, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, *QUIET)
    assert r.returncode == 0, r.stderr
    s = summary(out)
    # The sizes come from the file system, the version from the binary's
    # own --version: not from what the summary says.
    model, mmproj = TINY / "model.gguf", TINY / "mmproj.gguf"
    assert s["model_files"] == [
        {"kind": "model", "path": str(model), "bytes": os.path.getsize(model)},
        {"kind": "mmproj", "path": str(mmproj), "bytes": os.path.getsize(mmproj)},
    ]
    version = subprocess.run([str(sluice_bin), "--version"], capture_output=True,
                             text=True).stdout.split()[1]
    assert s["sluice_version"] == version
    assert s["engine"] == "llama"
    # Which llama.cpp: the stamp scripts/llama-cpp.sh left in the prefix the
    # binary links, and the version in the name of the ggml it loads.
    stamp = (llama_prefix / ".sluice-complete").read_text().strip()
    ggml = next(p.name for p in (llama_prefix / "lib").glob("libggml-base.so.*.*.*"))
    expected = f"{stamp}, ggml {ggml.removeprefix('libggml-base.so.')}"
    assert s["llama_cpp"] == expected
    said = subprocess.run([str(sluice_bin), "--version"], capture_output=True, text=True).stdout
    assert said.splitlines()[1] == f"llama.cpp: {expected}", said
    # Which sources: the commit git says the tree is at (a build of every
    # commit said "0.1.0" alone), in --version, the summary and each
    # Parquet part's created_by, as the spec's "APP version V (build B)".
    build = said.splitlines()[2].removeprefix("build: ")
    assert said.splitlines()[2].startswith("build: "), said
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0:  # (a tree without .git says "unknown")
        assert build in (f"git {head.stdout.strip()}", f"git {head.stdout.strip()}-dirty"), said
    assert s["sluice_build"] == build
    pq = pytest.importorskip("pyarrow.parquet")
    r = sluice.caption(SAMPLES, tmp_path / "pq", *QUIET, "--format", "parquet")
    assert r.returncode == 0, r.stderr
    created = pq.ParquetFile(tmp_path / "pq" / "part-00000.parquet").metadata.created_by
    assert created == f"sluice version {version} (build {build})", created
    # A dry run opens no model: no file is named as having made rows.
    dry = tmp_path / "dry"
    r = sluice.caption(SAMPLES, dry, *QUIET, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert summary(dry)["model_files"] == [] and summary(dry)["engine"] == "llama"


def test_the_summary_of_the_openai_engine_names_no_model_file(sluice, tmp_path):
    from openai_helpers import FakeServer, completion
    out = tmp_path / "out"
    with FakeServer(lambda h, attempt, body: completion(h)) as fake:
        r = sluice.run("caption", SAMPLES, "-o", out, "--engine", "openai", "--endpoint",
                       fake.url, *QUIET)
    assert r.returncode == 0, r.stderr
    s = summary(out)
    assert s["engine"] == "openai" and s["model_files"] == [] and s["model"] == "fake"
    assert s["llama_cpp"] is None  # the server's llama.cpp, if any, is not ours to name


def test_sampled_rows_are_drawn_alike_over_shards_and_a_resume(sluice, tmp_path):
    """Each row draws with its own seed (--seed mixed with its id): at
    --parallel 1 (one row a batch: the logits do not depend on its
    neighbours) two input shards merged, and a run cut by --limit then
    resumed, give the uninterrupted run's captions and seeds, row for row."""
    sampled = (*QUIET, "--max-tokens", "8", "--temperature", "0.9", "--seed", "7",
               "--parallel", "1")

    def by_id(out):
        rows = read_rows(out)
        assert len({r["id"] for r in rows}) == len(rows)
        return {r["id"]: (r["caption"], r["seed"]) for r in rows}

    whole = tmp_path / "whole"
    assert sluice.caption(SAMPLES, whole, *sampled).returncode == 0
    want = by_id(whole)
    assert len(want) == len(sample_images())
    assert len({seed for _, seed in want.values()}) == len(want)  # a seed of its own each
    greedy = tmp_path / "greedy"
    assert sluice.caption(SAMPLES, greedy, *QUIET, "--max-tokens", "8").returncode == 0
    assert any(want[k][0] != c for k, (c, _) in by_id(greedy).items())  # really sampled
    merged = {}
    for i in range(2):
        out = tmp_path / f"shard{i}"
        r = sluice.caption(SAMPLES, out, *sampled, "--input-shard", f"{i}/2",
                           "--input-shard-size", "3")
        assert r.returncode == 0, r.stderr
        part = by_id(out)
        assert not part.keys() & merged.keys()
        merged.update(part)
    assert merged == want
    resumed = tmp_path / "resumed"
    assert sluice.caption(SAMPLES, resumed, *sampled, "--limit", "5").returncode == 0
    assert len(read_rows(resumed)) == 5
    r = sluice.caption(SAMPLES, resumed, *sampled)
    assert r.returncode == 0, r.stderr
    assert by_id(resumed) == want


def test_two_prompts_over_the_same_inputs_join_by_id(sluice, tmp_path):
    """The A/B of docs/output.md: the same folder with two prompts, one run
    in Parquet and one in JSONL; DuckDB's join of the two on id has a row
    for every input, each row's prompt tokens from its own run."""
    duckdb = pytest.importorskip("duckdb")
    a, b = tmp_path / "a", tmp_path / "b"
    r = sluice.caption(SAMPLES, a, *QUIET, "--prompt", "Describe this image.",
                       "--format", "parquet", "--parallel", "4")
    assert r.returncode == 0, r.stderr
    r = sluice.caption(SAMPLES, b, *QUIET, "--prompt",
                       "Write a long and careful description of this picture.",
                       "--parallel", "2")
    assert r.returncode == 0, r.stderr
    expected = {str(p.relative_to(SAMPLES)) for p in sample_images()}
    joined = duckdb.sql(
        f"SELECT a.id, a.prompt_tokens, b.prompt_tokens, a.seed = b.seed "
        f"FROM read_parquet('{a}/part-*.parquet') a "
        f"JOIN read_json_auto('{b}/part-*.jsonl') b USING (id)").fetchall()
    assert {row[0] for row in joined} == expected and len(joined) == len(expected)
    # The longer prompt of run b, in every row: each row met its own run's.
    assert all(pb > pa for _, pa, pb, _ in joined)
    # One --seed, one id: the same row seed in both runs.
    assert all(same for *_, same in joined)


def test_the_summary_holds_every_setting_a_resume_compares(sluice, tmp_path):
    """params names the common knobs; stop strings, the JSON schema, --ctx,
    --include, every input (eval18's finding) were in the resume fingerprint
    alone, inside the ledger. `settings` holds them as the fingerprint does,
    and a resume refuses a change to any of them: one list."""
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    images = sample_images()
    (src / "a" / "x.jpg").symlink_to(images[0])
    (src / "b" / "y.jpg").symlink_to(images[1])
    out = tmp_path / "out"
    flags = ["--stop", "zz", "--ctx", "2048", "--include", "*.jpg", "--seed", "7",
             "--prompt", "Say what it is."]
    r = sluice.run("caption", src / "a", src / "b", "-o", out, *QUIET, *flags,
                   "--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")
    assert r.returncode == 0, r.stderr
    settings = summary(out)["settings"]
    assert settings["inputs"] == [str(src / "a"), str(src / "b")]
    assert settings["stop"] == ["zz"] and settings["ctx"] == 2048 and settings["seed"] == 7
    assert settings["include"] == ["*.jpg"] and settings["prompt"] == "Say what it is."
    assert settings["model"] == str(TINY / "model.gguf") and settings["max_tokens"] == 3
    # Each one is compared on resume: another --stop is refused, naming it.
    r = sluice.run("caption", src / "a", src / "b", "-o", out, *QUIET, *flags[2:], "--stop", "yy",
                   "--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf")
    assert r.returncode == 2 and "stop" in r.stderr, r.stderr[-2000:]
