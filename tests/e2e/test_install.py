"""The installed prefix on a machine that never had the build cache
(docs/building.md, "Installing on machines without the build cache"): the
build under test installed with DESTDIR, the prefix moved to another
folder (as a tarred prefix unpacked on a node would be), then run with
llama.cpp's and nanoarrow's prefixes and the build folder hidden: each
command runs in a private mount namespace (`unshare -m`) with an empty
tmpfs over those folders, visible to that command alone. bin/sluice
captions three images to JSONL and Parquet, and examples/library/caption.c
is compiled there against the moved prefix with pkg-config and runs.
The runs skip where unshare or mount is not permitted (not root, no
CAP_SYS_ADMIN), or where llama.cpp is a system one (its folder cannot be
hidden without hiding the system); what the prefix holds is checked
everywhere. They run under the ASan build too (its sluice.pc links the
example with -fsanitize)."""
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import REPO, SAMPLES, TINY, simd_flags

IMAGES = ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]


def nanoarrow_prefix(build: pathlib.Path) -> pathlib.Path:
    """nanoarrow's prefix as CMake found it (its cache), else setup.sh's file."""
    cache = build / "CMakeCache.txt"
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.startswith("NANOARROW_INCLUDE_DIR:"):
                return pathlib.Path(line.split("=", 1)[1]).parent
    return pathlib.Path((REPO / "build" / "nanoarrow-prefix").read_text().strip())


@pytest.fixture(scope="module")
def hidden(sluice_bin, llama_prefix, tmp_path_factory) -> list[pathlib.Path]:
    """The folders a node does not have; skips where they cannot be hidden."""
    # unshare first: a user who may not use it may not read root's cache either
    for tool in ("unshare", "mount", "pkg-config", "cc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    probe = tmp_path_factory.mktemp("probe")
    r = subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "none", str(probe)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("cannot hide the build cache: `unshare -m` + `mount -t tmpfs` not permitted "
                    f"here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    if not (llama_prefix / ".sluice-complete").is_file():
        pytest.skip(f"llama.cpp at {llama_prefix} is not scripts/llama-cpp.sh's build "
                    "(a system one): its folder cannot be hidden alone")
    build = sluice_bin.parent
    folders = {llama_prefix.resolve(), llama_prefix.resolve().parent / "src",
               nanoarrow_prefix(build).resolve(), build.resolve(),
               (REPO / "build").resolve()}
    return sorted(f for f in folders if f.is_dir())


def on_node(hidden: list[pathlib.Path], cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """cmd run with every folder of hidden under an empty tmpfs."""
    script = ('for d in $HIDE; do mount -t tmpfs none "$d" || exit 99; done; '
              'unset HIDE; exec "$@"')
    env = dict(kw.pop("env", os.environ), HIDE=" ".join(map(str, hidden)))
    assert all(" " not in str(d) for d in hidden), hidden
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd], env=env,
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def node(sluice_bin, tmp_path_factory) -> pathlib.Path:
    """A node's folder: the moved prefix in prefix/, the model and images copied."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    root = tmp_path_factory.mktemp("node")
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["cmake", "--install", str(sluice_bin.parent), "--prefix", "/opt/sluice"],
                       env=dict(os.environ, DESTDIR=str(dest)), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.move(dest / "opt" / "sluice", root / "prefix")
    for name in ("model.gguf", "mmproj.gguf"):
        shutil.copy(TINY / name, root / name)
    (root / "images").mkdir()
    for name in IMAGES:
        shutil.copy(SAMPLES / name, root / "images" / name)
    return root


def test_the_prefix_holds_llama_cpp_and_no_path_to_the_cache(node, llama_prefix):
    prefix = node / "prefix"
    runpath = subprocess.run(["readelf", "-d", str(prefix / "bin" / "sluice")],
                             capture_output=True, text=True, check=True).stdout
    assert "$ORIGIN/" in runpath and str(llama_prefix) not in runpath, runpath
    libs = sorted(p.name for p in (prefix / "lib" / "sluice").iterdir())
    for name in ("libllama.so.0", "libmtmd.so.0", "libggml.so.0", "libggml-base.so.0",
                 "libggml-cpu.so.0", "libllama.so", "libnanoarrow_static.a"):
        assert name in libs, libs
    # sluice's libraries only: not llama-server's, nor its programs and headers
    assert not [n for n in libs if "server" in n], libs
    assert sorted(p.name for p in prefix.iterdir()) == ["bin", "include", "lib"]
    assert sorted(p.name for p in (prefix / "bin").iterdir()) == ["sluice"]
    assert sorted(p.name for p in (prefix / "include").iterdir()) == ["sluice"]
    pc = (prefix / "lib" / "pkgconfig" / "sluice.pc").read_text()
    assert str(llama_prefix.parent) not in pc and ".cache" not in pc, pc


def test_sluice_runs_from_the_moved_prefix_without_the_cache(node, hidden, llama_prefix):
    sluice = str(node / "prefix" / "bin" / "sluice")
    r = on_node(hidden, [sluice, "--version"])
    assert r.returncode == 0, r.stderr
    stamp = (llama_prefix / ".sluice-complete").read_text().strip()
    assert r.stdout.splitlines()[1].startswith(f"llama.cpp: {stamp}"), r.stdout
    # the hiding works: each hidden folder, not empty here, is empty there
    assert all(any(d.iterdir()) for d in hidden)
    r = on_node(hidden, ["sh", "-c", 'for d; do [ -z "$(ls -A "$d")" ] || exit 1; done', "sh",
                         *map(str, hidden)])
    assert r.returncode == 0, hidden


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_caption_job_runs_without_the_cache(node, hidden, fmt):
    out = node / f"out-{fmt}"
    r = on_node(hidden, [str(node / "prefix" / "bin" / "sluice"), "caption",
                         str(node / "images"), "-o", str(out), "--format", fmt,
                         "--model", str(node / "model.gguf"), "--mmproj",
                         str(node / "mmproj.gguf"), "--max-tokens", "8", "--metrics-addr", "off"])
    assert r.returncode == 0, r.stderr[-4000:]
    if fmt == "jsonl":
        rows = [json.loads(line) for line in (out / "part-00000.jsonl").read_text().splitlines()]
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    assert sorted(row["id"] for row in rows) == IMAGES
    assert all(row["error"] is None and row["caption"] for row in rows), rows


def test_a_program_builds_and_runs_against_the_moved_prefix(node, hidden, llama_prefix):
    """docs/library.md's one command, on the node: the compile and link too
    see nothing of the cache (nanoarrow's archives, llama.cpp's libraries)."""
    exe = node / "caption"
    env = dict(os.environ, PKG_CONFIG_PATH=str(node / "prefix" / "lib" / "pkgconfig"))
    r = on_node(hidden, ["sh", "-c", 'cc -std=c11 "$1" -o "$2" $(pkg-config --cflags --libs sluice)',
                         "sh", str(REPO / "examples" / "library" / "caption.c"), str(exe)],
                env=env, cwd=node)
    assert r.returncode == 0, r.stderr[-4000:]
    r = on_node(hidden, [str(exe), str(node / "model.gguf"), str(node / "mmproj.gguf"),
                         *(str(node / "images" / n) for n in IMAGES)])
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    runs = r.stdout.split("run ")[1:]
    assert len(runs) == 2, r.stdout
    for run in runs:
        lines = [l.split("\t") for l in run.splitlines()[1:]]
        assert sorted(int(l[0]) for l in lines) == [0, 1, 2] and all(l[1] == "ok" for l in lines)


def test_the_bundled_libraries_load_each_other_not_another_llama_cpp(node, tmp_path):
    """Installed into a shared prefix (/usr/local) beside another llama.cpp
    (its own `cmake --install` puts libggml*.so.0 in /usr/local/lib), sluice
    and the libraries in lib/sluice/ still load each other: sluice's run
    path is lib/sluice alone, and llama.cpp's own ($ORIGIN/../lib:$ORIGIN)
    means lib/lib and lib/sluice from there, never the prefix's lib/. A
    library sluice does not name itself (a CUDA build's libggml-cuda,
    NEEDED by libggml alone) is found that way."""
    prefix = tmp_path / "prefix"
    shutil.copytree(node / "prefix", prefix, symlinks=True)
    own = prefix / "lib" / "sluice"
    sonames = sorted(p.name for p in own.glob("lib*.so.[0-9]") if p.is_symlink())
    assert "libggml-base.so.0" in sonames, sonames
    for soname in sonames:  # the other llama.cpp: real files, from the copies
        shutil.copy(own / soname, prefix / "lib" / soname)
    objects = [prefix / "bin" / "sluice"] + sorted(p for p in own.glob("lib*.so.*")
                                                   if not p.is_symlink())
    for obj in objects:
        ldd = subprocess.run(["ldd", str(obj)], capture_output=True, text=True, timeout=60).stdout
        for line in ldd.splitlines():
            if line.split()[0] in sonames:
                where = pathlib.Path(line.split("=>")[1].split("(")[0].strip()).resolve()
                assert where.parent == own.resolve(), f"{obj.name}: {line.strip()}"


@pytest.mark.parametrize("absolute", ["libdir", "includedir"])
def test_sluice_pc_takes_an_absolute_install_dir_as_it_is(sluice_bin, llama_prefix, tmp_path,
                                                          absolute):
    """GNUInstallDirs takes an absolute CMAKE_INSTALL_LIBDIR or _INCLUDEDIR
    (a distribution's -DCMAKE_INSTALL_LIBDIR=/usr/lib64): sluice.pc wrote
    it after ${prefix} (libdir=${prefix}//usr/lib64) and, with an absolute
    LIBDIR, counted its way up from its own place to a prefix that is not
    the install's (includedir=/include). Only a configure is needed: the
    file cmake --install copies is the build folder's sluice.pc, read here
    from the place the install gives it (${LIBDIR}/pkgconfig)."""
    for tool in ("cmake", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    prefix = tmp_path / "prefix"
    dirs = {"libdir": "lib", "includedir": "include"}
    dirs[absolute] = str(tmp_path / "elsewhere" / absolute)
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build),
                        f"-DSLUICE_LLAMA_PREFIX={llama_prefix}",
                        f"-DSLUICE_NANOARROW_PREFIX={nanoarrow_prefix(sluice_bin.parent)}",
                        f"-DCMAKE_INSTALL_PREFIX={prefix}",
                        f"-DCMAKE_INSTALL_LIBDIR={dirs['libdir']}",
                        f"-DCMAKE_INSTALL_INCLUDEDIR={dirs['includedir']}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    expected = {k: os.path.join(prefix, v) for k, v in dirs.items()}  # an absolute v stays
    pc_dir = pathlib.Path(expected["libdir"]) / "pkgconfig"
    pc_dir.mkdir(parents=True)
    shutil.copy(build / "sluice.pc", pc_dir / "sluice.pc")
    for var in ("libdir", "includedir"):
        r = subprocess.run(["pkg-config", f"--variable={var}", "sluice"],
                           env=dict(os.environ, PKG_CONFIG_PATH=str(pc_dir)),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert os.path.normpath(r.stdout.strip()) == expected[var], (var, r.stdout)


def skip_unless_native_build(llama_prefix: pathlib.Path) -> None:
    """Skips where sluice's configure records no CPU flags for llama_prefix."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    cache = llama_prefix.parent / "build" / "CMakeCache.txt"
    if not (llama_prefix / ".sluice-complete").is_file() or not cache.is_file() or \
            "GGML_NATIVE:BOOL=ON" not in cache.read_text().splitlines():
        pytest.skip(f"llama.cpp at {llama_prefix} is not scripts/llama-cpp.sh's GGML_NATIVE build")


def configure_with_prefix(sluice_bin, llama_prefix, tmp_path, cpu_flags, source=REPO,
                          linked=False, build_folder=True, cpuinfo=None):
    """sluice configured (only) against a stand-in for llama_prefix: a
    folder of links to its files, beside a link to its build folder's
    CMakeCache.txt (whether it is GGML_NATIVE) and to its sources, holding
    cpu_flags as its .sluice-cpu-flags (none where None). The real prefix
    is not touched; linked: named to cmake by a symbolic link to it;
    build_folder False: none beside it (removed after the build);
    cpuinfo: a file the configure reads as /proc/cpuinfo (bound over it
    in a private mount namespace: skips where that is not permitted).
    Returns (cmake's output, SL_LLAMA_CPU_FLAGS's words)."""
    root = tmp_path / "llama"
    prefix = root / "prefix"
    for sub in ("include", "lib", "bin"):
        (prefix / sub).mkdir(parents=True)
        for f in (llama_prefix / sub).iterdir():
            (prefix / sub / f.name).symlink_to(f)
    (prefix / ".sluice-complete").symlink_to(llama_prefix / ".sluice-complete")
    if build_folder:
        (root / "build").mkdir()
        (root / "build" / "CMakeCache.txt").symlink_to(llama_prefix.parent / "build" /
                                                       "CMakeCache.txt")
    if (llama_prefix.parent / "src").is_dir():
        (root / "src").symlink_to(llama_prefix.parent / "src")
    if cpu_flags is not None:
        (prefix / ".sluice-cpu-flags").write_text(cpu_flags)
    if linked:
        (tmp_path / "linked").symlink_to(prefix)
        prefix = tmp_path / "linked"
    build = tmp_path / "build"
    cmd = ["cmake", "-S", str(source), "-B", str(build), f"-DSLUICE_LLAMA_PREFIX={prefix}",
           f"-DSLUICE_NANOARROW_PREFIX={nanoarrow_prefix(sluice_bin.parent)}"]
    if cpuinfo is not None:
        cmd = ["unshare", "-m", "sh", "-c",
               'mount --bind "$1" /proc/cpuinfo || exit 99; shift; exec "$@"', "sh",
               str(cpuinfo), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if cpuinfo is not None and r.returncode == 99:
        pytest.skip("cannot stand in for /proc/cpuinfo: `unshare -m` + `mount --bind` not "
                    f"permitted here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    header = (build / "generated" / "llama_build.h").read_text()
    return r.stdout + r.stderr, re.search(r'SL_LLAMA_CPU_FLAGS "([^"]*)"', header).group(1).split()


def test_the_cpu_flags_are_the_compiling_machines_not_the_configuring_ones(sluice_bin,
                                                                          llama_prefix, tmp_path):
    """One ~/.cache/sluice shared over NFS by nodes of different CPUs: node
    B configuring sluice wrote B's SIMD flags for the llama.cpp A compiled
    (GGML_NATIVE), so a node like B passed the CPU check and could stop on
    an illegal instruction. scripts/llama-cpp.sh now writes the compiling
    machine's /proc/cpuinfo flags line into the prefix (.sluice-cpu-flags),
    and the configure takes the build's flags from it: here a stand-in
    naming avx512_fp16 and amx_tile, which this CPU lacks. A prefix built
    before the file (none) falls back to this machine's flags, saying so."""
    skip_unless_native_build(llama_prefix)
    here = next(t for t in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if t.startswith("flags")).split(":", 1)[1].split()
    theirs = ["avx2", "avx512_fp16", "amx_tile"]
    if all(f in here for f in theirs):
        pytest.skip("this CPU has every flag of the stand-in")
    # fpu, sse2 and lm: flags no GGML_NATIVE x86-64 build can do without, not checked.
    # The prefix named through a link (its build folder and file are the
    # target's neighbours, as for the script's cache linked elsewhere).
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "recorded",
                                       "flags\t\t: fpu sse2 lm " + " ".join(theirs) + "\n",
                                       linked=True)
    assert flags == theirs, out
    assert "has no .sluice-cpu-flags" not in out, out
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "older", None)
    assert "has no .sluice-cpu-flags" in out and "this machine's SIMD flags are taken" in out, out
    assert flags and set(flags) <= set(here), (flags, here)
    # its build folder removed (the prefix is all sluice needs): the file,
    # written for a GGML_NATIVE build alone, says what to check (nothing was)
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "no-build",
                                       "flags\t\t: fpu sse2 lm " + " ".join(theirs) + "\n",
                                       build_folder=False)
    assert flags == theirs, out
    # without either, nothing: not a GGML_NATIVE build as far as anyone can tell
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "neither", None,
                                       build_folder=False)
    assert flags == [] and "has no .sluice-cpu-flags" not in out, out


ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""


def test_a_prefix_without_cpu_flags_on_a_machine_without_a_flags_line(sluice_bin, llama_prefix,
                                                                      tmp_path):
    """A prefix without .sluice-cpu-flags configured on a machine whose
    /proc/cpuinfo has no flags line (arm64: Features): no flags are taken
    and none are checked, and the configure's notice says so; before, it
    said "this machine's SIMD flags are taken as the build's", where there
    were none. An x86 line beside it still gives its SIMD flags."""
    skip_unless_native_build(llama_prefix)
    (tmp_path / "arm64").write_text(ARM64_CPUINFO)
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "arm", None,
                                       cpuinfo=tmp_path / "arm64")
    assert flags == [], out
    assert "this machine's SIMD flags are taken" not in out, out
    assert "has no .sluice-cpu-flags" in out and "has no flags line" in out, out
    assert "checks no CPU" in out, out
    (tmp_path / "x86").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 hypervisor\n")
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "x86-64", None,
                                       cpuinfo=tmp_path / "x86")
    assert flags == simd_flags(["fpu", "sse2", "avx2", "hypervisor"]) == ["avx2"], out
    assert "this machine's SIMD flags are taken" in out and "has no flags line" not in out, out


def test_the_simd_flags_checked_are_cmake_llama_simd_flags_txts(sluice_bin, llama_prefix,
                                                                tmp_path):
    """Which /proc/cpuinfo flags count as SIMD extensions was a regular
    expression in CMakeLists.txt and a copy of it in test_engine_edges,
    free to drift apart. Both read cmake/llama_simd_flags.txt now: a
    source tree whose list also names sse2 (links to this one's files, the
    list a copy) checks sse2 too, and this one's does not."""
    skip_unless_native_build(llama_prefix)
    source = tmp_path / "source"
    source.mkdir()
    for f in REPO.iterdir():
        if f.name not in ("cmake", "build", ".git"):
            (source / f.name).symlink_to(f)
    (source / "cmake").mkdir()
    for f in (REPO / "cmake").iterdir():
        if f.name != "llama_simd_flags.txt":
            (source / "cmake" / f.name).symlink_to(f)
    listed = (REPO / "cmake" / "llama_simd_flags.txt").read_text()
    (source / "cmake" / "llama_simd_flags.txt").write_text(listed + "sse2\n")
    line = "flags\t\t: fpu sse2 lm avx2 avx512_fp16\n"
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "more", line, source)
    assert flags == ["sse2", "avx2", "avx512_fp16"], out
    out, flags = configure_with_prefix(sluice_bin, llama_prefix, tmp_path / "this", line)
    assert flags == ["avx2", "avx512_fp16"], out


FAKE_CMAKE = """#!/bin/sh
# scripts/llama-cpp.sh's cmake, as a test's: a configure makes the build
# folder, a build puts what the script stages there and notes it compiled.
build=
while [ $# -gt 0 ]; do
    case $1 in -B|--build) build=$2; shift;; esac
    shift
done
mkdir -p "$build/bin"
touch "$build/bin/libllama.so" "$build/bin/libmtmd.so" "$build/objects-of-this-run"
printf '#!/bin/sh\\n' >"$build/bin/llama-server"
cp "$build/bin/llama-server" "$build/bin/llama-mtmd-cli"
chmod +x "$build/bin/llama-server" "$build/bin/llama-mtmd-cli"
"""


def test_llama_cpp_sh_records_the_cpu_it_compiles_for(llama_prefix, tmp_path):
    """scripts/llama-cpp.sh writes the /proc/cpuinfo flags line of the
    machine that compiles llama.cpp (GGML_NATIVE) into the prefix, where
    sluice's configure reads it (test above). A build folder another CPU
    compiled into (its .sluice-cpu-flags names other SIMD flags: a stamp
    removed on another node of a shared cache) is removed first, since
    cmake keeps its objects, compiled for that CPU, under this one's name;
    one of this CPU's is built on, and so is one whose line differs only
    in flags no build uses (cmake/llama_simd_flags.txt's are compared:
    before, any other flag, hypervisor say, cost a recompile). Run with a stand-in cmake and sources
    (no compiler runs), the pinned sdist linked from the real cache."""
    versions = (REPO / "scripts" / "versions.sh").read_text()
    version = re.search(r"^LLAMA_CPP_PYTHON_VERSION=(\S+)", versions, re.M).group(1)
    sdist = llama_prefix.parent / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        pytest.skip(f"no {sdist}: the pinned sdist is not in the cache")
    root = tmp_path / "cache" / "llama.cpp" / f"{version}-cpu"
    src = root / "src"
    for header in ("include/llama.h", "ggml/include/ggml.h", "tools/mtmd/mtmd.h",
                   "tools/mtmd/mtmd-helper.h", "CMakeLists.txt"):
        (src / header).parent.mkdir(parents=True, exist_ok=True)
        (src / header).write_text("")
    (root / sdist.name).symlink_to(sdist)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cmake").write_text(FAKE_CMAKE)
    (tmp_path / "bin" / "cmake").chmod(0o755)
    (tmp_path / "pc").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_LLAMA", "PKG_CONFIG"))}
    env.update(SLUICE_CACHE=str(tmp_path / "cache"), SLUICE_JOBS="1",
               PKG_CONFIG_LIBDIR=str(tmp_path / "pc"),  # no system llama.cpp
               PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    here = next(t for t in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if t.startswith("flags"))
    (root / "build").mkdir()
    (root / "build" / ".sluice-cpu-flags").write_text("flags\t\t: fpu\n")
    (root / "build" / "objects-of-another-cpu").write_text("")

    def script():
        r = subprocess.run(["bash", str(REPO / "scripts" / "llama-cpp.sh")], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == str(root / "prefix"), r.stdout
        return r

    r = script()
    assert "compiled on a CPU with other SIMD flags" in r.stderr, r.stderr
    assert not (root / "build" / "objects-of-another-cpu").exists()
    assert (root / "prefix" / ".sluice-cpu-flags").read_text() == here + "\n"
    assert (root / "prefix" / ".sluice-complete").read_text() == f"llama-cpp-python {version} (cpu)\n"
    # a rebuild on this CPU (the stamp removed) keeps its folder
    (root / "prefix" / ".sluice-complete").unlink()
    (root / "build" / "objects-of-this-run").rename(root / "build" / "objects-of-this-cpu")
    r = script()
    assert "removing it" not in r.stderr, r.stderr
    assert (root / "build" / "objects-of-this-cpu").exists()
    assert (root / "prefix" / ".sluice-cpu-flags").read_text() == here + "\n"
    # a node of this CPU model under another kernel or hypervisor: its line
    # differs in flags no build uses (hypervisor, md_clear, user_shstk), so
    # the folder is kept (no 10-30 minute recompile); the note becomes this
    # node's line
    words = here.split(":", 1)[1].split()
    others = ["hypervisor", "md_clear", "user_shstk"]
    assert simd_flags(others) == []
    flipped = [w for w in words if w not in others] + [o for o in others if o not in words]
    (root / "prefix" / ".sluice-complete").unlink()
    (root / "build" / ".sluice-cpu-flags").write_text("flags\t\t: " + " ".join(flipped) + "\n")
    r = script()
    assert "removing it" not in r.stderr, r.stderr
    assert (root / "build" / "objects-of-this-cpu").exists()
    assert (root / "prefix" / ".sluice-cpu-flags").read_text() == here + "\n"
    # one SIMD flag more there (an extension this CPU lacks): removed
    extra = next((f for f in ["amx_tile", "avx512_fp16", "avx512f", "avx2", "avx"]
                  if f not in words), None)
    if extra is None:
        pytest.skip("this CPU has every SIMD flag of the stand-in")
    assert simd_flags([extra]) == [extra]
    (root / "prefix" / ".sluice-complete").unlink()
    (root / "build" / ".sluice-cpu-flags").write_text("flags\t\t: " + " ".join(words + [extra]) + "\n")
    r = script()
    assert f"other SIMD flags ({extra} there, not here; none here, not there)" in r.stderr, r.stderr
    assert not (root / "build" / "objects-of-this-cpu").exists()
    assert (root / "prefix" / ".sluice-cpu-flags").read_text() == here + "\n"
    (root / "build" / "objects-of-this-run").rename(root / "build" / "objects-of-this-cpu")
    # a build folder of the script before it noted the CPU: compiled on any
    # node of the cache, so not built on (its objects kept under this CPU's
    # name, as for another CPU's folder above)
    (root / "prefix" / ".sluice-complete").unlink()
    (root / "build" / ".sluice-cpu-flags").unlink()
    r = script()
    assert "does not say which CPU compiled it" in r.stderr, r.stderr
    assert not (root / "build" / "objects-of-this-cpu").exists()
    assert (root / "prefix" / ".sluice-cpu-flags").read_text() == here + "\n"
