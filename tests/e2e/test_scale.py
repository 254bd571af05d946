"""Memory at scale, from outside (docs/executor.md "The whole program at 10x
the rows"): the real CLI at N and 10N rows, its peak RSS read by a small
parent of its own. What may grow with the input is named and priced in the
docs; everything else stays flat. bench/scale.py measures every input
format and side path the same way at larger sizes."""
import json
import subprocess
import sys

from conftest import SAMPLES, sanitized

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault")
QUIET = ("--metrics-addr", "off", "--show", "0", "--progress-every", "3600")


def peak_rss_mb(sluice, *args):
    """`sluice ARGS`' exit status, stderr and peak RSS in MB. A child's
    ru_maxrss counts the pages it shared with its parent before exec, so
    the run is started by a fresh Python, far smaller than the run, and
    not by pytest."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
             "sys.stderr.buffer.write(r.stderr)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    r = subprocess.run([sys.executable, "-c", probe, str(sluice.binary), *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr[-3000:]
    rc, kb = map(int, r.stdout.split())
    return rc, r.stderr, kb / 1024


def manifest(path, n, image):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"image": image(i), "n": i}) + "\n")


def test_ten_times_the_rows_through_the_whole_program_stays_flat(sluice, tmp_path):
    """Rows through reader, decode, writer, ledger and errors file: a
    manifest of N and 10N lines, one in eight naming a file that is not
    there (a failed row to --errors-file), the rest one small JPEG. The run
    keeps nothing per row in memory (the ledger and the id set are SQLite
    files behind bounded page caches), so 10x the rows is a few MB more
    (measured 53.5 -> 57.5 MB over 20,000 -> 200,000 rows), not 10x."""
    thumb = str(SAMPLES / "variants" / "chelsea_thumb48.jpg")
    small, large = 5_000, 50_000
    peaks = []
    for n in (small, large):
        m = tmp_path / f"m{n}.jsonl"
        manifest(m, n, lambda i: str(tmp_path / "gone" / f"{i}.jpg") if i % 8 == 7 else thumb)
        errors = tmp_path / f"errors{n}.jsonl"
        rc, err, mb = peak_rss_mb(sluice, "caption", m, "-o", tmp_path / f"out{n}", "--dry-run",
                                  "--errors-file", errors, *QUIET)
        assert rc == 3, err[-3000:]
        assert sum(1 for _ in open(errors)) == n // 8
        peaks.append(mb)
    bound = 24 if sanitized() else 12
    assert peaks[1] - peaks[0] < bound, f"{peaks[0]:.1f} MB at {small} rows, {peaks[1]:.1f} at {large}"
