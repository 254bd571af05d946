"""libsluice from a program outside the tree (docs/library.md): the build
installed into a temporary prefix with `cmake --install`, each example in
examples/library/ compiled against that prefix alone with the one command
the docs give (`cc app.c $(pkg-config --cflags --libs sluice)`), and run on
the tiny model. Under the ASan build (SLUICE_BIN in build-asan) the
installed sluice.pc carries -fsanitize, so the examples run under ASan and
LeakSanitizer: a leak or a use after free fails them."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import REPO, SAMPLES, TINY, sample_images

EXAMPLES = REPO / "examples" / "library"
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]


@pytest.fixture(scope="module")
def prefix(sluice_bin, tmp_path_factory) -> pathlib.Path:
    """The build under test installed as a user would install it."""
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    dest = tmp_path_factory.mktemp("prefix")
    subprocess.run(["cmake", "--install", str(sluice_bin.parent), "--prefix", str(dest)],
                   check=True, capture_output=True, timeout=300)
    return dest


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("bin")


def pkg_config(prefix: pathlib.Path) -> list[str]:
    # PKG_CONFIG_PATH alone: nothing of the source tree or the build folder.
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    out = subprocess.run(["pkg-config", "--cflags", "--libs", "sluice"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


_built: dict[pathlib.Path, pathlib.Path] = {}


def build(prefix: pathlib.Path, source: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """source compiled and linked against the prefix (once per session)."""
    if source in _built:
        return _built[source]
    exe = out_dir / source.stem
    if source.suffix == ".cpp":
        cmd = ["c++", "-std=c++17"]
    else:
        cmd = ["cc", "-std=c11"]
    cmd += WARNINGS + [str(source), "-o", str(exe)] + pkg_config(prefix)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=out_dir)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    _built[source] = exe
    return exe


def test_install_has_what_a_program_needs(prefix):
    assert (prefix / "include" / "sluice" / "sluice.h").is_file()
    assert (prefix / "lib" / "libsluice.a").is_file()
    pc = (prefix / "lib" / "pkgconfig" / "sluice.pc").read_text()
    # The installed prefix, not the build's: moved with --prefix.
    flags = pkg_config(prefix)
    include = [f[2:] for f in flags if f.startswith("-I")][0]
    assert pathlib.Path(include).resolve() == (prefix / "include").resolve()
    assert "Requires:" in pc and "vips" in pc


@pytest.mark.parametrize("source", sorted(EXAMPLES.glob("*.c")) + sorted(EXAMPLES.glob("*.cpp")),
                         ids=lambda p: p.name)
def test_example_compiles_against_the_prefix(prefix, source, bin_dir):
    build(prefix, source, bin_dir)


def test_cmake_project_links_through_pkg_config(prefix, tmp_path):
    """docs/library.md's CMake lines: pkg_check_modules' imported target.
    It takes a library given by path for a link option placed before the
    program's objects, so sluice.pc must name each one as -L DIR -l NAME."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    doc = (REPO / "docs" / "library.md").read_text()
    start = doc.index("```cmake\n", doc.index("## Link")) + len("```cmake\n")
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.25)\nproject(app LANGUAGES C)\n"
        f"add_executable(app {EXAMPLES / 'caption.c'})\n"
        + doc[start:doc.index("```", start)])
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    for cmd in (["cmake", "-S", ".", "-B", "b"], ["cmake", "--build", "b"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run([str(tmp_path / "b" / "app"), str(TINY / "model.gguf"),
                        str(TINY / "mmproj.gguf"), str(SAMPLES / "chelsea.jpg")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [run[0][:2] for run in answers(r.stdout)] == [(0, "ok"), (0, "ok")]


def answers(stdout: str) -> list[list[tuple[int, str, str]]]:
    """caption.c's output: per run, (index, status, text) lines."""
    runs = []
    for line in stdout.splitlines():
        if line.startswith("run "):
            runs.append([])
            continue
        index, status, text = line.split("\t", 2)
        runs[-1].append((int(index), status, text))
    return runs


def test_caption_example_answers_each_image_twice(prefix, bin_dir, tmp_path):
    exe = build(prefix, EXAMPLES / "caption.c", bin_dir)
    images = [SAMPLES / "chelsea.jpg", SAMPLES / "coffee.jpg", SAMPLES / "rocket.jpg"]
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"),
                        *map(str, images)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = answers(r.stdout)
    assert len(runs) == 2
    for run in runs:
        assert sorted(i for i, _, _ in run) == [0, 1, 2]
        assert all(status == "ok" and text for _, status, text in run), run
    # Not compared run to run: at n_parallel > 1 batch composition depends
    # on timing, and greedy may flip at a near-tie (docs/engine.md).


def test_caption_example_reports_a_corrupt_image_and_answers_the_rest(prefix, bin_dir, tmp_path):
    exe = build(prefix, EXAMPLES / "caption.c", bin_dir)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"),
                        str(SAMPLES / "chelsea.jpg"), str(bad)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    for run in answers(r.stdout):
        by_index = {i: (status, text) for i, status, text in run}
        assert by_index[0][0] == "ok"
        assert by_index[1][0] == "decode" and str(bad) in by_index[1][1]


def test_stop_example_stops_from_a_thread_and_resumes(prefix, bin_dir, tmp_path):
    exe = build(prefix, EXAMPLES / "stop.c", bin_dir)
    # Four copies of each sample JPEG (copies: one file named twice is
    # refused): with six inputs, a first run on an idle machine once wrote
    # all six before the stop, set from another thread after the first row,
    # took effect (llama.cpp's two threads spin on both cores; a fresh
    # clone's `make test`).
    images = []
    for k in range(4):
        for p in sorted(SAMPLES.glob("*.jpg")):
            images.append(tmp_path / f"{k}-{p.name}")
            shutil.copyfile(p, images[-1])
    out = tmp_path / "out"
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"), str(out),
                        *map(str, images)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    first = next(l for l in lines if l.startswith("first run:"))
    assert first.startswith("first run: stopped,"), r.stdout
    assert int(first.split(", ")[1].split()[0]) < len(images), r.stdout
    # Exactly once over both runs: the output's rows, read back with json.
    rows = [json.loads(line) for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(p.name for p in images)
    assert all(row["error"] is None for row in rows)
    # A first run refused at its start (one file named twice) writes no
    # row: the example's stopper thread, waiting for the first, hung its
    # join before it was told the run had ended.
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"),
                        str(tmp_path / "refused"), str(images[0]), str(images[0])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "is named twice" in r.stderr, r.stdout + r.stderr


def test_cxx_example_runs_a_job(prefix, bin_dir, tmp_path):
    exe = build(prefix, EXAMPLES / "caption_cxx.cpp", bin_dir)
    images = [SAMPLES / "chelsea.jpg", SAMPLES / "coffee.jpg"]
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"),
                        str(tmp_path / "out"), *map(str, images)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(l.split(":")[0] for l in r.stdout.splitlines() if l.startswith("row ")) == \
        ["row chelsea.jpg", "row coffee.jpg"]


def test_docs_example_compiles_and_answers(prefix, bin_dir, tmp_path):
    """docs/library.md's complete example, as a reader would copy it."""
    doc = (REPO / "docs" / "library.md").read_text()
    start = doc.index("```c\n", doc.index("## A complete example")) + len("```c\n")
    source = bin_dir / "docs_example.c"
    source.write_text(doc[start:doc.index("```", start)])
    exe = build(prefix, source, bin_dir)
    r = subprocess.run([str(exe), str(TINY / "model.gguf"), str(TINY / "mmproj.gguf"),
                        str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "coffee.jpg")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(int(l.split("\t")[0]) for l in r.stdout.splitlines()) == [0, 1]


def test_a_program_may_define_names_libsluice_uses_inside(prefix, bin_dir, tmp_path):
    """libsluice's own functions without the sl_ prefix (template_fill,
    coord_new, stage_read, ...) were global in the installed archive: a
    program defining one failed to link ("multiple definition"). The
    installed archive exports sl_* alone; the program's own functions are
    its own, and a dry-run job still runs."""
    source = tmp_path / "clash.c"
    source.write_text(r'''
#include <sluice/sluice.h>
#include <stdio.h>
#include <string.h>
int template_fill(const char *t) { return t ? 1 : 0; }
int coord_new(void) { return 2; }
int stage_read(void) { return 3; }
int main(int argc, char **argv)
{
    (void)argc;
    sl_caption_params p = sl_caption_default_params();
    p.input_dir = argv[1];
    p.output_dir = argv[2];
    p.dry_run = true;
    p.metrics_addr = NULL;
    sl_caption_summary s;
    sl_status st = sl_caption_run(&p, &s);
    printf("%s %d %d %d %ld\n", sl_status_name(st), template_fill("x"), coord_new(), stage_read(),
           s.rows_ok);
    return st == SL_OK ? 0 : 1;
}
''')
    exe = build(prefix, source, bin_dir)
    out = tmp_path / "out"
    r = subprocess.run([str(exe), str(SAMPLES), str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "1", "2", "3", str(len(sample_images()))], r.stdout
    # what the archive exports: sl_* and the C++ runtime's symbols only
    nm = subprocess.run(["nm", "-g", "--defined-only", str(prefix / "lib" / "libsluice.a")],
                        capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in nm.splitlines() if len(line.split()) == 3]
    assert names and all(n.startswith(("sl_", "_Z", "DW.ref.")) for n in names), \
        [n for n in names if not n.startswith(("sl_", "_Z", "DW.ref."))][:10]
