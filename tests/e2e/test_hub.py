"""--model hf://ORG/REPO: models fetched from a hub into huggingface_hub's
cache layout, resumed after a dropped connection, verified by size, reused
offline. The hub is a local server laying files out as the real one does
(tests/e2e/hubserver.py): no hub is reachable from this machine."""
import os
import shutil
import subprocess

import pytest

from conftest import SAMPLES, TINY, read_rows, sha256
from hubserver import Hub

ORG_REPO = "sluice-test/tiny-vlm"
MODEL = "tiny-vlm-Q8_0.gguf"
PROJECTOR = "mmproj-tiny-vlm-f16.gguf"


@pytest.fixture
def few_images(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(SAMPLES / name, root / name)
    return root


@pytest.fixture
def repos():
    return {ORG_REPO: {MODEL: (TINY / "model.gguf").read_bytes(),
                       PROJECTOR: (TINY / "mmproj.gguf").read_bytes(),
                       "README.md": b"# tiny\n"}}


def run(sluice_bin, args, env_extra, timeout=600):
    env = dict(os.environ, **env_extra)
    return subprocess.run([str(sluice_bin), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def caption_args(inp, out, model, *extra):
    return ["caption", inp, "-o", out, "--model", model, "--parallel", "1", "-n", "8",
            "--metrics-addr", "off", "--overwrite", *extra]


def snapshot(home, commit):
    return home / "hub" / "models--sluice-test--tiny-vlm" / "snapshots" / commit


def test_fetches_model_and_projector_then_captions_like_local_files(sluice_bin, tmp_path,
                                                                     few_images, repos):
    home = tmp_path / "hf"
    with Hub(repos) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        r = run(sluice_bin, caption_args(few_images, tmp_path / "out", f"hf://{ORG_REPO}"), env)
        assert r.returncode == 0, r.stderr
    snap = snapshot(home, hub.commit)
    assert sha256(snap / MODEL) == sha256(TINY / "model.gguf")
    assert sha256(snap / PROJECTOR) == sha256(TINY / "mmproj.gguf")
    assert not (snap / "README.md").exists()
    assert (home / "hub" / "models--sluice-test--tiny-vlm" / "refs" / "main").read_text() == hub.commit
    assert not list(snap.glob("*.incomplete"))

    local = run(sluice_bin, caption_args(few_images, tmp_path / "local", TINY / "model.gguf",
                                         "--mmproj", TINY / "mmproj.gguf"), {})
    assert local.returncode == 0, local.stderr
    by_id = lambda rows: {row["id"]: row["caption"] for row in rows}
    assert by_id(read_rows(tmp_path / "out")) == by_id(read_rows(tmp_path / "local"))
    assert len(read_rows(tmp_path / "out")) == 2


def test_dropped_connection_resumes_with_range(sluice_bin, tmp_path, few_images, repos):
    home = tmp_path / "hf"
    size = len(repos[ORG_REPO][MODEL])
    with Hub(repos) as hub:
        hub.drop_once[MODEL] = size // 2
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        r = run(sluice_bin, caption_args(few_images, tmp_path / "out", f"hf://{ORG_REPO}/{MODEL}"),
                env)
        assert r.returncode == 0, r.stderr
        model_gets = [rng for m, path, rng in hub.log if m == "GET" and path.endswith("/" + MODEL)
                      and path.startswith("/lfs/")]
    assert model_gets[0] is None
    assert model_gets[1] == f"bytes={size // 2}-"
    assert sha256(snapshot(home, hub.commit) / MODEL) == sha256(TINY / "model.gguf")


def test_partial_file_from_an_earlier_run_is_resumed(sluice_bin, tmp_path, few_images, repos):
    home = tmp_path / "hf"
    with Hub(repos) as hub:
        snap = snapshot(home, hub.commit)
        snap.mkdir(parents=True)
        data = repos[ORG_REPO][PROJECTOR]
        (snap / (PROJECTOR + ".incomplete")).write_bytes(data[:1000])
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        r = run(sluice_bin, caption_args(few_images, tmp_path / "out", f"hf://{ORG_REPO}"), env)
        assert r.returncode == 0, r.stderr
        ranges = [rng for m, path, rng in hub.log
                  if m == "GET" and path.startswith("/lfs/") and path.endswith(PROJECTOR)]
    assert ranges == ["bytes=1000-"]
    assert sha256(snap / PROJECTOR) == sha256(TINY / "mmproj.gguf")


def test_cached_files_are_reused_and_work_offline(sluice_bin, tmp_path, few_images, repos):
    home = tmp_path / "hf"
    with Hub(repos) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        assert run(sluice_bin, caption_args(few_images, tmp_path / "o1", f"hf://{ORG_REPO}"),
                   env).returncode == 0
        hub.log.clear()
        r = run(sluice_bin, caption_args(few_images, tmp_path / "o2", f"hf://{ORG_REPO}"), env)
        assert r.returncode == 0, r.stderr
        assert not [entry for entry in hub.log if entry[0] == "GET" and entry[1].startswith("/lfs/")]
    # The hub is gone: offline mode finds both files in the cache.
    r = run(sluice_bin, caption_args(few_images, tmp_path / "o3", f"hf://{ORG_REPO}"),
            {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert len(read_rows(tmp_path / "o3")) == 2


def test_wrong_size_is_an_error_and_leaves_nothing_named_as_the_file(sluice_bin, tmp_path,
                                                                     few_images, repos):
    home = tmp_path / "hf"
    with Hub(repos) as hub:
        hub.lie_size[MODEL] = len(repos[ORG_REPO][MODEL]) - 10
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        r = run(sluice_bin, caption_args(few_images, tmp_path / "out", f"hf://{ORG_REPO}"), env)
    assert r.returncode == 1
    assert "the hub lists" in r.stderr and MODEL in r.stderr
    assert not (snapshot(home, hub.commit) / MODEL).exists()


def test_bad_references_say_what_to_change(sluice_bin, tmp_path, few_images, repos):
    repos["sluice-test/two-models"] = {"a-F16.gguf": b"x", "b-Q4_K_M.gguf": b"y"}
    with Hub(repos) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}
        missing = run(sluice_bin, caption_args(few_images, tmp_path / "o", "hf://nobody/nothing"), env)
        ambiguous = run(sluice_bin, caption_args(few_images, tmp_path / "o",
                                                 "hf://sluice-test/two-models"), env)
        malformed = run(sluice_bin, caption_args(few_images, tmp_path / "o", "hf://just-an-org"), env)
    assert missing.returncode == 2
    assert "hf://nobody/nothing" in missing.stderr and "404" in missing.stderr
    assert ambiguous.returncode == 2
    assert "a-F16.gguf" in ambiguous.stderr and "b-Q4_K_M.gguf" in ambiguous.stderr
    assert "name one" in ambiguous.stderr
    assert malformed.returncode == 2 and "hf://ORG/REPO" in malformed.stderr


def test_a_listed_name_that_leaves_the_cache_is_not_a_file_of_the_repository(
        sluice_bin, tmp_path, few_images, repos):
    # A hostile (or broken) hub lists "../../../../escape-Q8_0.gguf": it
    # sorts first among the Q8_0 models, and was chosen and written to
    # HF_HOME/escape-Q8_0.gguf (libcurl squashes the "../" of the URL, and the
    # hub answered that path). It is no file of the repository: dropped.
    home = tmp_path / "hf"
    evil = "../../../../escape-Q8_0.gguf"
    repos[ORG_REPO][evil] = repos[ORG_REPO][MODEL]
    with Hub(repos) as hub:
        hub.raw["/escape-Q8_0.gguf"] = repos[ORG_REPO][MODEL]
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home)}
        r = run(sluice_bin, caption_args(few_images, tmp_path / "out", f"hf://{ORG_REPO}"), env)
        assert r.returncode == 0, r.stderr
        asked = [path for _, path, _ in hub.log]
    assert not any("escape" in path for path in asked), asked
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*.gguf"))
    snap = snapshot(home, hub.commit).relative_to(home)
    assert written == [str(snap / PROJECTOR), str(snap / MODEL)], written
