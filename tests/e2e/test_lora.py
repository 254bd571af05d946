"""The llama engine's LoRA adapters (--lora FILE[:SCALE], llama.lora) and KV
cache types (--cache-type-k/-v, llama.cache_type_k/v) through the CLI, on
the tiny model and adapters tools/gen_model.py --lora-out writes for it: a
path holding ':' and a scale after its last one, the adapters and types in
_summary.json, a resumed job with other adapters refused, job-file keys that
`config print` writes back, the errors (exit 2, naming the file or the
accepted types), the openai engine refusing both, and a q8_0 cache captioning
every sample."""
import json
import pathlib
import re
import sys

import pytest

from conftest import REPO, SAMPLES, TINY, read_rows, sample_images

sys.path.insert(0, str(REPO / "tools"))
import gen_model  # noqa: E402  (tools/ is not a package)

BASE = ("--parallel", "1", "--max-tokens", "12", "--metrics-addr", "off", "--show", "0")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A zero and a random adapter for the tiny model, in a folder whose name
    holds ':' (a path the FILE:SCALE split must leave whole), and one made
    for another model (the smolvlm-256m shape)."""
    root = tmp_path_factory.mktemp("lora") / "run:1"
    root.mkdir()
    out = {}
    for name, shape, init in (("zero", "tiny", "zero"), ("random", "tiny", "random"),
                              ("other", "smolvlm-256m", "random")):
        out[name] = root / f"{name}.gguf"
        assert gen_model.main(["--shape", shape, "--lora-init", init,
                               "--lora-out", str(out[name])]) == 0
    return out


def captions(out_dir) -> dict[str, str]:
    return {r["id"]: r["caption"] for r in read_rows(out_dir)}


def test_adapters_change_captions_by_their_scale_and_are_recorded(sluice, adapters, tmp_path):
    runs = {"base": (), "zero": ("--lora", adapters["zero"]),
            "random": ("--lora", adapters["random"]),
            "random_0": ("--lora", f"{adapters['random']}:0"),
            "both": ("--lora", f"{adapters['zero']}:0.5", "--lora", f"{adapters['random']}:-0")}
    got = {}
    for name, extra in runs.items():
        r = sluice.caption(SAMPLES, tmp_path / name, *BASE, *extra)
        assert r.returncode == 0, (name, r.stderr[-3000:])
        got[name] = captions(tmp_path / name)
    assert len(got["base"]) == len(sample_images())
    # lora_b all zeros adds exactly 0; scale 0 applies nothing.
    assert got["zero"] == got["base"]
    assert got["random_0"] == got["base"]
    assert got["both"] == got["base"]
    changed = [k for k in got["base"] if got["random"][k] != got["base"][k]]
    assert len(changed) == len(got["base"]), "the random adapter left captions as they were"

    summary = json.loads((tmp_path / "both" / "_summary.json").read_text())
    assert summary["lora"] == [{"path": f"{adapters['zero']}", "scale": 0.5},
                               {"path": f"{adapters['random']}", "scale": 0.0}]
    assert summary["params"]["cache_type_k"] == "f16"
    assert json.loads((tmp_path / "base" / "_summary.json").read_text())["lora"] == []


def test_a_resumed_job_with_other_adapters_is_refused(sluice, adapters, tmp_path):
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, *BASE, "--lora", adapters["random"])
    assert r.returncode == 0, r.stderr[-3000:]
    again = sluice.caption(SAMPLES, out, *BASE, "--lora", f"{adapters['random']}:1.0")
    assert again.returncode == 0 and "already done" in again.stdout, again.stderr[-3000:]
    for other in (("--lora", f"{adapters['random']}:0.5"), ("--lora", adapters["zero"]), ()):
        r = sluice.caption(SAMPLES, out, *BASE, *other)
        assert r.returncode == 2, (other, r.stdout, r.stderr)
        assert str(out) in r.stderr and "lora" in r.stderr, r.stderr
        assert "--overwrite" in r.stderr


def test_job_file_keys_print_back(sluice, adapters, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"""\
input:
  paths: [{json.dumps(str(SAMPLES))}]
llama:
  model: {json.dumps(str(TINY / "model.gguf"))}
  mmproj: {json.dumps(str(TINY / "mmproj.gguf"))}
  lora: [{json.dumps(str(adapters["zero"]))}, {json.dumps(str(adapters["random"]) + ":0")}]
  cache_type_k: q8_0
  cache_type_v: q4_0
output:
  dir: {json.dumps(str(tmp_path / "out"))}
""")
    first = sluice.run("config", "print", job)
    assert first.returncode == 0, first.stderr
    assert re.search(r"^  cache_type_k: q8_0 ", first.stdout, re.M), first.stdout
    assert re.search(r"^  cache_type_v: q4_0 ", first.stdout, re.M)
    assert f'    - "{adapters["random"]}:0"\n' in first.stdout
    printed = tmp_path / "printed.yaml"
    printed.write_text(first.stdout)
    second = sluice.run("config", "print", printed)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    # A flag replaces the file's list, as for every list.
    third = sluice.run("config", "print", job, "--lora", adapters["zero"], "--cache-type-k", "f16")
    assert f'    - "{adapters["zero"]}"\n' in third.stdout
    assert str(adapters["random"]) not in third.stdout
    assert re.search(r"^  cache_type_k: f16 ", third.stdout, re.M)
    # The job file runs: the types and adapters reach the engine.
    r = sluice.run("run", printed, *BASE)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["params"]["cache_type_k"] == "q8_0"
    assert summary["params"]["cache_type_v"] == "q4_0"
    assert [a["scale"] for a in summary["lora"]] == [1.0, 0.0]


def test_adapters_and_types_that_cannot_be_used_exit_2(sluice, adapters, tmp_path):
    missing = adapters["zero"].parent / "missing.gguf"
    cases = [
        (("--lora", missing), [f"--lora '{missing}'", "No such file"]),
        (("--lora", TINY / "model.gguf"),
         [f"--lora '{TINY / 'model.gguf'}'", "expect general.type to be 'adapter'"]),
        (("--lora", adapters["other"]),
         [f"--lora '{adapters['other']}'", "incorrect shape (hint: maybe wrong base model?)"]),
        (("--lora", ":0.5"), ["--lora ':0.5': no file before the scale"]),
        (tuple(x for _ in range(9) for x in ("--lora", adapters["zero"])),
         ["--lora takes at most 8 items"]),
        (("--cache-type-k", "q9"),
         ["--cache-type-k expects one of f16, f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl; "
          "got 'q9'"]),
    ]
    for i, (extra, wants) in enumerate(cases):
        r = sluice.caption(SAMPLES, tmp_path / f"out{i}", *BASE, *extra)
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        for want in wants:
            assert want in r.stderr, (extra, r.stderr)
        # llama.cpp's own line said the cause again before sluice's
        assert r.stderr.count(wants[-1]) == 1, (extra, r.stderr)
    for extra, want in ((("--lora", adapters["zero"]), "vLLM: --enable-lora --lora-modules"),
                        (("--cache-type-v", "q8_0"), "vLLM: --kv-cache-dtype")):
        r = sluice.run("caption", SAMPLES, "-o", tmp_path / "o", "--engine", "openai",
                       "--endpoint", "http://127.0.0.1:9", *extra)
        assert r.returncode == 2 and want in r.stderr, r.stderr


def test_a_q8_0_cache_captions_every_sample_in_less_memory(sluice, tmp_path):
    sizes = {}
    for t in ("f16", "q8_0"):
        r = sluice.caption(SAMPLES, tmp_path / t, *BASE, "--cache-type-k", t, "--cache-type-v", t,
                           "--verbose")
        assert r.returncode == 0, r.stderr[-3000:]
        rows = read_rows(tmp_path / t)
        assert len(rows) == len(sample_images())
        assert all(row["caption"] and not row["error"] for row in rows)
        m = re.search(rf"KV cache: \d+ positions .*, K {t}, V {t}: ([0-9.]+) MiB", r.stderr)
        assert m, r.stderr[-3000:]
        sizes[t] = float(m.group(1))
    assert sizes["q8_0"] < 0.6 * sizes["f16"]


def test_a_resumed_job_with_other_cache_types_is_refused(sluice, tmp_path):
    """A quantized cache computes other logits (q4_0 changed 180 of 200
    greedy answers, docs/engine.md): resuming a folder with other types
    would mix two computations in one dataset. The same types go on; a
    folder an older sluice wrote (no cache types in its fingerprint) goes
    on as it did."""
    out = tmp_path / "out"
    q8 = ("--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
    r = sluice.caption(SAMPLES, out, *BASE, *q8)
    assert r.returncode == 0, r.stderr[-3000:]
    again = sluice.caption(SAMPLES, out, *BASE, *q8)
    assert again.returncode == 0 and "already done" in again.stdout, again.stderr[-3000:]
    for other in ((), ("--cache-type-k", "q8_0"), ("--cache-type-k", "q4_0", "--cache-type-v", "q8_0")):
        r = sluice.caption(SAMPLES, out, *BASE, *other)
        assert r.returncode == 2, (other, r.stdout, r.stderr)
        assert str(out) in r.stderr and "kv_cache_types" in r.stderr, r.stderr
        assert "--overwrite" in r.stderr
    # f16 written, q8_0 asked: refused the other way too
    f16 = tmp_path / "f16"
    assert sluice.caption(SAMPLES, f16, *BASE).returncode == 0
    r = sluice.caption(SAMPLES, f16, *BASE, *q8)
    assert r.returncode == 2 and "kv_cache_types" in r.stderr, r.stderr

    import sqlite3
    db = sqlite3.connect(out / "_sluice_ledger.sqlite")
    (fp,) = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    lines = fp.split("\n")
    assert sum(line.startswith("kv_cache_types\t") for line in lines) == 1, fp
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'",
                   ("\n".join(line for line in lines
                              if not line.startswith(("kv_cache_types\t", "fingerprint_form\t"))),))
    db.close()
    r = sluice.caption(SAMPLES, out, *BASE, *q8)
    assert r.returncode == 0 and "already done" in r.stdout, r.stderr[-3000:]


def test_a_folder_of_today_without_stages_is_not_resumed_with_one(sluice, tmp_path):
    """A llama folder whose fingerprint holds the cache types was written by
    today's sluice, whose fingerprint holds the stages too: it must match
    only the fingerprint of every key. The older forms were tried in every
    combination, and the one without stages but with the cache types (a
    form no sluice wrote) matched a folder written without a stage that is
    resumed with one: the stage's column was missing from the rows already
    written, and the run went on (exit 0)."""
    out = tmp_path / "out"
    r = sluice.caption(SAMPLES, out, *BASE)
    assert r.returncode == 0, r.stderr[-3000:]
    stage = tmp_path / "flag.lua"
    stage.write_text("function process(row) row.columns.flag = 'v1' return row end\n")
    r = sluice.caption(SAMPLES, out, *BASE, "--stage", f"{stage}@engine")
    assert r.returncode == 2, (r.stdout, r.stderr[-3000:])
    assert str(out) in r.stderr and "stages" in r.stderr and "--overwrite" in r.stderr, r.stderr
