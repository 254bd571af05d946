"""Setup is idempotent; the generated models are deterministic GGUF files
that llama.cpp's own llama-mtmd-cli loads and runs on an image."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY, sample_images, sanitized, sha256

pytestmark = pytest.mark.skipif(sanitized(), reason="checked once, in the plain build")


def test_setup_is_idempotent():
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in TINY.glob("*.gguf")}
    prefix_file = REPO / "build" / "llama-prefix"
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "Debian packages: all" in out
    assert "reusing cached build" in out or "using system llama.cpp" in out \
        or "using SLUICE_LLAMA_PREFIX" in out
    assert "up to date" in out.split("virtualenv:")[1].splitlines()[0]
    assert "models/tiny: up to date" in out
    after = {p: (sha256(p), p.stat().st_mtime_ns) for p in TINY.glob("*.gguf")}
    assert before == after and len(after) == 2
    assert (REPO / prefix_file.read_text().strip() / "include" / "mtmd.h").exists()


def test_generator_is_seeded_and_deterministic(tmp_path):
    gen = [sys.executable, str(REPO / "tools" / "gen_model.py"), "--shape", "tiny"]
    subprocess.run(gen + ["--out", str(tmp_path / "a")], check=True, capture_output=True)
    subprocess.run(gen + ["--out", str(tmp_path / "b"), "--seed", "1"], check=True,
                   capture_output=True)
    for name in ("model.gguf", "mmproj.gguf"):
        # setup generated models/tiny with the default seed: same bytes again
        assert sha256(tmp_path / "a" / name) == sha256(TINY / name)
        assert sha256(tmp_path / "b" / name) != sha256(TINY / name)


def test_tiny_model_runs_in_llama_mtmd_cli(llama_prefix):
    image = next(p for p in sample_images() if p.suffix == ".jpg")
    # llama.cpp logs asynchronously and may drop the last lines at exit on a
    # busy machine, so a run whose log came out short is tried again.
    for attempt in range(4):
        r = subprocess.run([str(llama_prefix / "bin" / "llama-mtmd-cli"),
                            "-m", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                            "--image", str(image), "-p", "Describe the image.", "-n", "8",
                            "--temp", "0", "-t", "2"],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, LLAMA_LOG_COLORS="0"))
        assert r.returncode == 0, r.stderr[-2000:]
        log = r.stdout + r.stderr
        # mtmd encoded the image (batched or per slice) and text was generated.
        if ("mtmd batch encoding done" in log or "image slice encoded" in log) and r.stdout.strip():
            return
    raise AssertionError(f"no image encoding or no text in 4 runs: {log[-2000:]}")
