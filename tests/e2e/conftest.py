"""Shared fixtures for the end-to-end tests: they drive the sluice CLI
(SLUICE_BIN, set by ctest to the binary of the build under test) on the
bundled samples and the generated tiny model."""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
TINY = REPO / "models" / "tiny"
IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff",
              ".heic", ".heif", ".avif"}


def sanitized() -> bool:
    return os.environ.get("SLUICE_SANITIZED", "0") in ("1", "ON", "TRUE", "true")


@pytest.fixture(scope="session")
def sluice_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SLUICE_BIN", REPO / "build" / "sluice"))
    assert path.exists(), f"{path} not built: run make build"
    return path


@pytest.fixture(scope="session")
def llama_prefix() -> pathlib.Path:
    prefix = os.environ.get("SLUICE_LLAMA_PREFIX") or (REPO / "build" / "llama-prefix").read_text().strip()
    return pathlib.Path(prefix)


def sample_images() -> list[pathlib.Path]:
    return sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_rows(out_dir: pathlib.Path) -> list[dict]:
    shard = out_dir / "part-00000.jsonl"
    return [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]


class Sluice:
    def __init__(self, binary: pathlib.Path):
        self.binary = binary

    def run(self, *args, timeout=600):
        return subprocess.run([str(self.binary), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)

    def caption(self, input_dir, out_dir, *extra, timeout=600):
        return self.run("caption", input_dir, "-o", out_dir, "--model", TINY / "model.gguf",
                        "--mmproj", TINY / "mmproj.gguf", *extra, timeout=timeout)


@pytest.fixture(scope="session")
def sluice(sluice_bin) -> Sluice:
    return Sluice(sluice_bin)


@pytest.fixture
def corrupt_set(tmp_path) -> pathlib.Path:
    """A folder with every sample image plus broken inputs beside them."""
    root = tmp_path / "in"
    shutil.copytree(SAMPLES, root, ignore=shutil.ignore_patterns("*.md"))
    first_jpg = next(p for p in sample_images() if p.suffix == ".jpg")
    data = first_jpg.read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "zero-bytes.jpg").write_bytes(b"")
    (root / "broken" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "broken" / "text.png").write_text("this is not a png\n")
    (root / "broken" / "notes.txt").write_text("not an image name: skipped, not a row\n")
    return root
