"""The embedded engine at its edges (docs/engine.md "Sizing"): settings
that can never fit stop the job with exit 2 naming what to change, and
what to change is the thing that does not fit."""

def test_a_system_prompt_past_the_context_is_named(sluice, four, tmp_path):
    """A --system of 15,000 tokens is in every request: the load-time check
    names it and says to shorten it (it used to say only to lower
    --max-tokens or --max-image-edge, which were 4 tokens and 49 positions);
    a --max-tokens past the context is still told to lower that alone."""
    long = "word " * 5000
    r = sluice.caption(four, tmp_path / "sys", "--system", long, "-n", 4,
                       "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "of which the system prompt takes 150" in r.stderr, r.stderr
    assert "shorten the system prompt (--system), lower --max-tokens" in r.stderr, r.stderr
    assert not list((tmp_path / "sys").glob("part-*")), "no row may be written"
    r = sluice.caption(four, tmp_path / "n", "-n", 100000, "--metrics-addr", "off")
    assert r.returncode == 2, r.stderr
    assert "system prompt" not in r.stderr and "lower --max-tokens" in r.stderr, r.stderr
