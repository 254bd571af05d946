"""Shared fixtures for the end-to-end tests: they drive the sluice CLI
(SLUICE_BIN, set by ctest to the binary of the build under test) on the
bundled samples and the generated tiny model."""
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
TINY = REPO / "models" / "tiny"
IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".tif", ".tiff",
              ".heic", ".heif", ".avif"}


def simd_flags(flags: list[str]) -> list[str]:
    """Those of /proc/cpuinfo's flags that a GGML_NATIVE llama.cpp build
    may use, in their order: cmake/llama_simd_flags.txt's list, as
    CMakeLists.txt reads it for SL_LLAMA_CPU_FLAGS."""
    lines = (REPO / "cmake" / "llama_simd_flags.txt").read_text().splitlines()
    simd = re.compile("|".join(l for l in lines if l and not l.startswith("#")))
    return [f for f in flags if simd.fullmatch(f)]


def native_flags() -> list[str]:
    """The SIMD flags of the CPU that compiled the llama.cpp sluice runs
    (its prefix's .sluice-cpu-flags, else this CPU's, as CMakeLists.txt
    takes them) that a GGML_NATIVE build may use; [] where that llama.cpp
    was not built for its CPU (then sluice checks nothing): its build
    folder says, or where it is gone, the prefix's file."""
    prefix = pathlib.Path(os.environ["SLUICE_LLAMA_PREFIX"])
    cache = prefix.parent / "build" / "CMakeCache.txt"
    recorded = prefix / ".sluice-cpu-flags"
    if not cache.exists() and not recorded.is_file():
        return []
    if cache.exists() and "GGML_NATIVE:BOOL=ON" not in cache.read_text().splitlines():
        return []
    text = (recorded if recorded.is_file() else pathlib.Path("/proc/cpuinfo")).read_text()
    line = next((t for t in text.splitlines() if t.startswith("flags")), "flags:")
    return simd_flags(line.split(":", 1)[1].split())


def sanitized() -> bool:
    return os.environ.get("SLUICE_SANITIZED", "0") in ("1", "ON", "TRUE", "true")


@pytest.fixture(scope="session")
def sluice_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SLUICE_BIN", REPO / "build" / "sluice")).absolute()  # tests may chdir
    assert path.exists(), f"{path} not built: run make build"
    return path


@pytest.fixture(scope="session")
def llama_prefix() -> pathlib.Path:
    prefix = os.environ.get("SLUICE_LLAMA_PREFIX") or (REPO / "build" / "llama-prefix").read_text().strip()
    return pathlib.Path(prefix)


def sample_images() -> list[pathlib.Path]:
    return sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def wds_shard(samples, pax=None) -> bytes:
    """A WebDataset tar shard (USTAR) of (member name, bytes) pairs, in order;
    with pax ({member name: size text}), a pax shard whose headers claim
    those sizes for those members (a lie past the end: "1000000000000000")."""
    import io
    import tarfile
    shard = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=shard, mode="w", format=fmt) as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if pax and name in pax:
                info.pax_headers = {"size": pax[name]}
            tar.addfile(info, io.BytesIO(data))
    return shard.getvalue()


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_rows(out_dir: pathlib.Path) -> list[dict]:
    shard = out_dir / "part-00000.jsonl"
    return [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]


def encodes(out: pathlib.Path) -> float:
    """Vision encoder calls of a finished run: its _metrics.prom's
    sluice_engine_step_seconds_count{phase="encode"}."""
    text = (out / "_metrics.prom").read_text()
    m = re.search(r'^sluice_engine_step_seconds_count\{[^}]*phase="encode"[^}]*\} (\S+)$', text,
                  re.M)
    assert m, "no encode phase count in _metrics.prom"
    return float(m.group(1))


def prom_total(out: pathlib.Path, name: str) -> float:
    """A counter of a finished run's _metrics.prom, summed over its labels."""
    text = (out / "_metrics.prom").read_text()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M))


LOSSLESS = ["variants/astronaut.png", "variants/camera_gray.png"]


def lossless_inputs(root: pathlib.Path) -> pathlib.Path:
    """root/in holding the lossless samples (LOSSLESS, by their base names),
    so that sluice (libvips) and llama-mtmd-cli (stb_image) see the same
    pixels when kept at their size."""
    src = root / "in"
    src.mkdir()
    for name in LOSSLESS:
        (src / pathlib.Path(name).name).write_bytes((SAMPLES / name).read_bytes())
    return src


def assert_llama_mtmd_cli_agrees(prefix: pathlib.Path, model_dir: pathlib.Path, image: pathlib.Path,
                                 ours: str, prompt: str, n: int, *extra: str) -> None:
    """llama-mtmd-cli's greedy answer for `image` equals `ours`. Its
    asynchronous logger can drop the tail of its output at exit on a busy
    machine (see common/log.cpp): a cut-short answer must be a prefix of
    ours, and is asked for again; only a full, equal answer passes."""
    for attempt in range(6):
        cli = subprocess.run([str(prefix / "bin" / "llama-mtmd-cli"),
                              "-m", str(model_dir / "model.gguf"), "--mmproj", str(model_dir / "mmproj.gguf"),
                              "--image", str(image), "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2",
                              *extra],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr[-2000:]
        theirs = cli.stdout.strip()
        assert theirs and ours.strip().startswith(theirs), (image.name, theirs, ours)
        if theirs == ours.strip():
            return
    raise AssertionError(f"{image.name}: llama-mtmd-cli never printed its whole answer")


class Sluice:
    def __init__(self, binary: pathlib.Path):
        self.binary = binary

    def run(self, *args, timeout=600):
        return subprocess.run([str(self.binary), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)

    def caption(self, input_dir, out_dir, *extra, timeout=600):
        return self.run("caption", input_dir, "-o", out_dir, "--model", TINY / "model.gguf",
                        "--mmproj", TINY / "mmproj.gguf", *extra, timeout=timeout)


def run_beside_a_holder(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `args` while another run of the same command holds the output's
    ledger: that one stops (a test fault) once its ledger is settled, and is
    killed after."""
    holder = subprocess.Popen(args, env=dict(env, SLUICE_TEST_FAULTS="trace,ledger.reconciled="
                                                                      "sleep:30000"),
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in holder.stderr:
            if "test fault point ledger.reconciled" in line:
                break
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        holder.kill()
        holder.wait()


def sample_copies(root: pathlib.Path, copies: int, corrupt: bool = False) -> int:
    """The sample images `copies` times over, as symlinks under root/cNNN/ (a
    larger input with distinct ids); with `corrupt`, one broken JPEG in
    root/broken/ ("broken" sorts first, so it fails early). Returns the
    number of inputs."""
    images = sample_images()
    for i in range(copies):
        for p in images:
            dst = root / f"c{i:03d}" / p.relative_to(SAMPLES)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(p)
    if corrupt:
        (root / "broken").mkdir()
        (root / "broken" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return copies * len(images) + (1 if corrupt else 0)


def metrics_base(proc, err_path: pathlib.Path, timeout: float = 60) -> str:
    """"http://127.0.0.1:PORT" of a run started with --metrics-addr
    127.0.0.1:0 whose stderr goes to err_path, once it has printed it."""
    deadline = time.monotonic() + timeout
    while not (m := re.search(r"metrics at (http://127\.0\.0\.1:\d+)/metrics",
                              err_path.read_text(errors="replace"))):
        assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
        time.sleep(0.1)
    return m.group(1)


class BackgroundRun:
    """`sluice caption` with the tiny model, in the background, serving its
    metrics and live page on a free port; stdout and stderr go to files in
    log_dir. A context manager: a run still going at the end is killed."""

    def __init__(self, sluice: "Sluice", input_dir, out_dir, *extra, log_dir: pathlib.Path):
        self.err_path = log_dir / "sluice.stderr"
        self.out_path = log_dir / "sluice.stdout"
        with open(self.err_path, "w") as err, open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(
                [str(sluice.binary), "caption", str(input_dir), "-o", str(out_dir),
                 "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                 "--metrics-addr", "127.0.0.1:0", *map(str, extra)],
                stdout=out, stderr=err)

    def log(self, tail: int = 2000) -> str:
        return self.err_path.read_text(errors="replace")[-tail:]

    def port(self, timeout: float = 60) -> int:
        """The metrics port, once the run has printed it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", self.log(10**6))
            if m:
                return int(m.group(1))
            time.sleep(0.1)
        raise AssertionError(f"no metrics address printed (exit {self.proc.poll()}): {self.log()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sluice(sluice_bin) -> Sluice:
    return Sluice(sluice_bin)


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> pathlib.Path:
    """A folder of four sample images (links), shared by a module's tests."""
    root = tmp_path_factory.mktemp("four") / "in"
    root.mkdir()
    for p in sample_images()[:4]:
        (root / p.name).symlink_to(p)
    return root


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


def sigint_timed(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, float]:
    """Sends a running sluice the first Ctrl-C; its exit status and the
    seconds from the signal to the exit (a stop must be heard at once)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=timeout)
    return rc, time.monotonic() - t0


def interrupt_when_said(proc: subprocess.Popen, err_path: pathlib.Path, text: str,
                        within: float = 60) -> tuple[int, float]:
    """Once a running sluice's stderr (written to err_path) says `text`,
    sigint_timed; killed if it ends first or anything fails."""
    try:
        deadline = time.monotonic() + within
        while text not in err_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        return sigint_timed(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
