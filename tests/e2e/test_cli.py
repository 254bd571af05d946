"""The command line against its own --help and the docs, and the edges of
its flags: a wrong value is exit 2 before anything runs, with a message
naming the flag, the value and what to change."""
from conftest import SAMPLES


def test_an_errors_file_that_names_no_file_stops_before_the_run(sluice, tmp_path):
    """--errors-file is written when the run ends: '' or a folder's 'dir/'
    (no file in either) failed only then, exit 1 after every row was run."""
    for errs in ("", f"{tmp_path}/errors/"):
        out = tmp_path / "out"
        r = sluice.caption(SAMPLES, out, "--max-tokens", "2", "--metrics-addr", "off",
                           "--errors-file", errs)
        assert r.returncode == 2, r.stderr
        assert f"--errors-file '{errs}' names no file" in r.stderr, r.stderr
        assert not out.exists(), "the run should not have started"
