"""What a researcher needs to build a dataset again (docs/output.md, "The
run report"): _summary.json names the sluice, the engine and the model
files that made the rows."""
import json
import os
import subprocess

from conftest import SAMPLES, TINY

QUIET = ("--max-tokens", "3", "--show", "0", "--metrics-addr", "off")


def summary(out):
    return json.loads((out / "_summary.json").read_text())


def test_the_summary_names_the_model_files_the_engine_and_the_version(sluice, sluice_bin,
                                                                      tmp_path):
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
