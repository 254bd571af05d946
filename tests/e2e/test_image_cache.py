"""The llama engine's image cache (docs/engine.md "The image cache"): a
VQA-shaped file (one picture asked four questions, a row each, beside
another picture) encodes each picture once, the same file under another
name too; the answers equal those of a run with --image-cache 0, which
encodes every row; a --turns all conversation of three questions encodes
its image once; the counts are in _metrics.prom."""
import json
import shutil

from conftest import SAMPLES, TINY, encodes, prom_total, read_rows

COMMON = ("--model", TINY / "model.gguf", "--mmproj", TINY / "mmproj.gguf", "--temperature", "0",
          "--max-tokens", "8", "--show", "0", "--metrics-addr", "off")


def test_a_picture_asked_again_is_encoded_once(sluice, tmp_path):
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "same-pixels.jpg")
    rows = [{"id": f"q{k}", "image": str(SAMPLES / "coffee.jpg"), "prompt": f"Question {k}?"}
            for k in range(4)]
    rows += [{"id": "copy", "image": str(tmp_path / "same-pixels.jpg"), "prompt": "Question 9?"},
             {"id": "other", "image": str(SAMPLES / "rocket.jpg"), "prompt": "Question 0?"}]
    manifest = tmp_path / "vqa.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {}
    for cache in ("256M", "0"):
        out = tmp_path / f"cache-{cache}"
        # --prefix-cache off: a kept sequence would not even look the image up.
        r = sluice.run("caption", manifest, "-o", out, "--image-cache", cache, "--prefix-cache",
                       "off", *COMMON)
        assert r.returncode == 0, r.stderr
        got[cache] = ({row["id"]: row["caption"] for row in read_rows(out)}, encodes(out), out)
    (cached, on, out_on), (plain, off, out_off) = got["256M"], got["0"]
    assert cached == plain
    per_image = off / 6  # each row's image encoded: its chunks (a tile and an overview)
    assert per_image >= 1 and per_image == int(per_image)
    assert on == 2 * per_image
    assert prom_total(out_on, "sluice_engine_image_cache_hits_total") == 4 * per_image
    assert prom_total(out_on, "sluice_engine_image_cache_queries_total") >= 6 * per_image
    assert prom_total(out_off, "sluice_engine_image_cache_queries_total") == 0


def test_a_conversation_encodes_its_picture_once(sluice, tmp_path):
    turns = []
    for k in range(3):
        turns += [{"from": "human", "value": f"Question {k}?"}, {"from": "gpt", "value": "x"}]
    manifest = tmp_path / "conv.jsonl"
    manifest.write_text(json.dumps({"id": "c", "image": str(SAMPLES / "coffee.jpg"),
                                    "conversations": turns}) + "\n")
    n = {}
    for which in ("first", "all"):
        out = tmp_path / which
        r = sluice.run("caption", manifest, "-o", out, "--prompt-column", "conversations",
                       "--turns", which, *COMMON)
        assert r.returncode == 0, r.stderr
        n[which] = encodes(out)
    assert n["all"] == n["first"] > 0
