"""End-to-end tests of trying a job on a slice (--limit N, --sample F;
docs/output.md "Resume"): the slice's rows are committed and the same
command without the flag goes on from there, every input in exactly one row
in all; a sample is chosen by row id, so it is the same on every run, about
the fraction asked, and a larger fraction keeps a smaller one's rows; wrong
values are a usage error (exit 2) naming the flag."""
import json
from collections import Counter

import pytest

from test_resume import expected_ids, part_ids, run
from conftest import sample_copies

COPIES = 5


@pytest.fixture()
def inputs(tmp_path):
    src = tmp_path / "in"
    sample_copies(src, COPIES)
    return src


def summary(out):
    return json.loads((out / "_summary.json").read_text())


def test_limit_then_the_full_run_reads_every_input_once(sluice, inputs, tmp_path):
    out = tmp_path / "out"
    r = run(sluice, inputs, out, "--limit", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(part_ids(out)) == 3
    assert summary(out)["rows"]["total"] == 3
    r = run(sluice, inputs, out)  # the same command without --limit: goes on
    assert r.returncode == 0, r.stderr[-2000:]
    ids = part_ids(out)
    assert Counter(ids) == Counter(expected_ids(COPIES)), "each input exactly once"
    s = summary(out)
    assert s["rows"]["skipped"] == 3 and s["rows"]["total"] == len(ids) - 3


def test_sample_is_the_same_rows_every_time_then_the_rest(sluice, inputs, tmp_path):
    everything = expected_ids(COPIES)
    half = []
    for name in ("a", "b"):
        r = run(sluice, inputs, tmp_path / name, "--sample", "0.5")
        assert r.returncode == 0, r.stderr[-2000:]
        half.append(sorted(part_ids(tmp_path / name)))
    assert half[0] == half[1], "a sample depends on the row ids alone"
    assert 0.3 * len(everything) < len(half[0]) < 0.7 * len(everything)
    assert len(set(half[0])) == len(half[0])
    r = run(sluice, inputs, tmp_path / "q", "--sample", "25%")
    assert r.returncode == 0, r.stderr[-2000:]
    quarter = set(part_ids(tmp_path / "q"))
    assert quarter < set(half[0]), "a larger fraction keeps a smaller one's rows"
    r = run(sluice, inputs, tmp_path / "a")  # without --sample: the other half
    assert r.returncode == 0, r.stderr[-2000:]
    assert Counter(part_ids(tmp_path / "a")) == Counter(everything)
    assert summary(tmp_path / "a")["rows"]["skipped"] == len(half[0])


@pytest.mark.parametrize("flag,value", [("--limit", "0"), ("--limit", "-2"), ("--limit", "3x"),
                                        ("--sample", "0"), ("--sample", "1.5"),
                                        ("--sample", "half"), ("--sample", "-10%")])
def test_bad_slice_values_are_usage_errors(sluice, inputs, tmp_path, flag, value):
    r = run(sluice, inputs, tmp_path / "out", flag, value)
    assert r.returncode == 2
    assert flag in r.stderr and f"'{value}'" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
