"""The llama engine's kept sequences (--prefix-cache, docs/engine.md "The
prefix cache"): --turns all asks each question after the earlier ones, and
each later question goes on in the sequence its question before left (the
conversation's tokens so far are not computed again): the regenerated
conversations equal those of --prefix-cache off, the rows' cached_tokens
and vllm:prefix_cache_hits_total say what was kept; a wrong value is refused
naming the choices; the job file takes llama.prefix_cache."""
import json
import re

from conftest import SAMPLES, TINY, prom_total, read_rows

COMMON = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf", "--temperature", "0",
          "--max-tokens", "8", "--show", "0", "--metrics-addr", "off")


def test_later_questions_go_on_in_the_kept_sequence(sluice, tmp_path):
    rows = []
    for i, name in enumerate(("coffee", "rocket", "coffee", "astronaut")):
        turns = []
        for k in range(3):
            turns += [{"from": "human", "value": f"Question {k} about picture {i}?"},
                      {"from": "gpt", "value": "x"}]
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        rows.append({"id": f"c{i}", "image": str(SAMPLES / f"{name}.jpg"), "conversations": turns})
    manifest = tmp_path / "conv.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {}
    # --encode-ahead 2: newcomers prepared by the encoder thread, a
    # follow-up by admission ahead of them.
    for name, cache, ahead in (("on", "on", "0"), ("off", "off", "0"), ("ahead", "on", "2")):
        out = tmp_path / name
        r = sluice.run("caption", manifest, "-o", out, "--prompt-column", "conversations",
                       "--turns", "all", "--prefix-cache", cache, "--parallel", "2",
                       "--encode-ahead", ahead, *COMMON)
        assert r.returncode == 0, r.stderr
        got[name] = ({row["id"]: row for row in read_rows(out)}, out)
    (on, out_on), (off, out_off) = got["on"], got["off"]
    ahead = got["ahead"][0]
    assert sorted(on) == sorted(off) == [f"c{i}" for i in range(4)]
    for rid in on:
        assert on[rid]["conversations"] == off[rid]["conversations"]
        assert ahead[rid]["conversations"] == off[rid]["conversations"]
        assert ahead[rid]["cached_tokens"] > ahead[rid]["prompt_tokens"] // 2, ahead[rid]
        assert on[rid]["caption"] == off[rid]["caption"]
        assert on[rid]["prompt_tokens"] == off[rid]["prompt_tokens"]
        # Questions 2 and 3 each went on after the whole prompt before them
        # at least: more than half of all the row's prompt positions.
        assert on[rid]["cached_tokens"] > on[rid]["prompt_tokens"] // 2, on[rid]
        assert off[rid]["cached_tokens"] == 0
    # vLLM's counter is of positions: every question's, the rows' sums.
    assert prom_total(out_on, "vllm:prefix_cache_hits_total") == sum(
        row["cached_tokens"] for row in on.values())
    assert prom_total(out_off, "vllm:prefix_cache_hits_total") == 0


def test_a_wrong_value_is_refused_and_the_job_file_takes_it(sluice, tmp_path):
    manifest = tmp_path / "one.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": str(SAMPLES / "coffee.jpg")}) + "\n")
    r = sluice.run("caption", manifest, "-o", tmp_path / "x", "--prefix-cache", "maybe", *COMMON)
    assert r.returncode == 2
    assert "--prefix-cache" in r.stderr and "on" in r.stderr and "off" in r.stderr
    job = tmp_path / "job.yaml"
    job.write_text("llama:\n  prefix_cache: off\n")
    r = sluice.run("config", "print", job)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*prefix_cache: off\b", r.stdout, re.M), r.stdout
    r = sluice.run("config", "print", job, "--prefix-cache", "on")
    assert re.search(r"^\s*prefix_cache: on\b", r.stdout, re.M), r.stdout
