"""The GPU check's pieces that need no GPU (bench/gpu/README.md): the
qwen3b-like shapes and --fast-weights of tools/gen_model.py, the figures
bench/gpu/gpucheck.py takes from a run's files, and run.sh's one JSON line
when it cannot even start. The whole path (pack, unpack, models, runs,
scrape, JSON) is the CPU smoke test of the README, minutes long, not here."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY, sanitized, sha256

sys.path.insert(0, str(REPO / "bench" / "gpu"))
sys.path.insert(0, str(REPO / "tools"))
import gpucheck  # noqa: E402

pytestmark = pytest.mark.skipif(sanitized(), reason="no sluice binary involved")


def test_qwen3b_shapes_have_qwen_dimensions():
    import gen_model as g
    q, q2 = g.SHAPES["qwen3b-like"], g.SHAPES["qwen3b-like-2l"]
    assert (q.n_layer, q.n_embd, q.n_head, q.n_head_kv, q.n_ff, q.n_vocab, q.tied) == \
        (36, 2048, 16, 2, 11008, 151680, True)
    assert (q.v_layer, q.v_embd, q.v_ff, q.image_size, q.patch_size, q.scale_factor) == \
        (27, 1152, 4304, 448, 14, 2)
    # 1024 patches, 2x2 pixel shuffle: 256 embeddings per encode
    assert (q.image_size // q.patch_size) ** 2 // q.scale_factor ** 2 == 256
    # the 2-layer one differs only in depth: the same vocabulary and widths
    assert (q2.n_layer, q2.v_layer) == (2, 2)
    assert {k: v for k, v in q2.__dict__.items() if k not in ("name", "n_layer", "v_layer")} == \
        {k: v for k, v in q.__dict__.items() if k not in ("name", "n_layer", "v_layer")}


def test_qwen25vl_shapes_have_qwen25vl_3b_dimensions():
    import gen_model as g
    q, q2 = g.SHAPES["qwen25vl-3b"], g.SHAPES["qwen25vl-3b-2l"]
    assert q.family == q2.family == "qwen25vl"
    # Qwen2.5-VL-3B-Instruct's config.json (text_config, vision_config)
    assert (q.n_layer, q.n_embd, q.n_head, q.n_head_kv, q.n_ff, q.tied) == \
        (36, 2048, 16, 2, 11008, True)
    assert (q.v_layer, q.v_embd, q.v_head, q.v_ff, q.patch_size, q.scale_factor) == \
        (32, 1280, 16, 3420, 14, 2)
    # fullatt_block_indexes [7, 15, 23, 31]: every 8th block attends fully
    assert q.v_wa_pattern == 8
    assert (q2.n_layer, q2.v_layer) == (2, 2)
    assert {k: v for k, v in q2.__dict__.items() if k not in ("name", "n_layer", "v_layer", "v_wa_pattern")} == \
        {k: v for k, v in q.__dict__.items() if k not in ("name", "n_layer", "v_layer", "v_wa_pattern")}
    # the run script measures this shape, at the baseline's 256 tokens an image
    run = (REPO / "bench" / "gpu" / "run.sh").read_text()
    assert "big=qwen25vl-3b\n" in run and "Q=(--image-max-tokens 256)" in run


def test_fast_weights_are_deterministic_and_not_the_default(tmp_path):
    gen = [sys.executable, str(REPO / "tools" / "gen_model.py"), "--shape", "tiny"]
    for d in ("a", "b"):
        subprocess.run(gen + ["--fast-weights", "--out", str(tmp_path / d)], check=True,
                       capture_output=True)
    for name in ("model.gguf", "mmproj.gguf"):
        assert sha256(tmp_path / "a" / name) == sha256(tmp_path / "b" / name)
        assert sha256(tmp_path / "a" / name) != sha256(TINY / name)
        assert (tmp_path / "a" / name).stat().st_size == (TINY / name).stat().st_size


def test_fast_weights_keep_each_tensors_scale():
    import gen_model as g
    W = g.Weights(0, fast=True)
    pool = W.pool.copy()
    a = W.normal("blk.0.ffn_up.weight", (512, 300), 0.05)
    b = W.normal("blk.1.ffn_up.weight", (512, 300), 0.05)
    assert abs(float(a.std()) - 0.05) < 0.002
    assert not (a == b).all()                  # another window of the pool
    assert (W.pool == pool).all()              # scaling a tensor never touches the pool


PROM = """# HELP sluice_engine_step_seconds time per step
# TYPE sluice_engine_step_seconds histogram
sluice_engine_step_seconds_bucket{replica="0",phase="decode",le="0.01"} 3
sluice_engine_step_seconds_sum{replica="0",phase="decode"} 2.0
sluice_engine_step_seconds_count{replica="0",phase="decode"} 100
sluice_engine_step_seconds_sum{replica="1",phase="decode"} 1.0
sluice_engine_step_seconds_count{replica="1",phase="decode"} 100
sluice_engine_step_seconds_sum{replica="0",phase="sample"} 0.5
sluice_engine_step_seconds_count{replica="0",phase="sample"} 100
sluice_gpu_utilization_ratio{gpu="0"} 0.8
sluice_rows_done_total 12
"""


def test_step_phases_sum_replicas_and_give_mean_ms():
    phases = gpucheck.step_phases(gpucheck.parse_prom(PROM))
    assert phases == {"decode": {"ms_mean": 15.0, "count": 200, "seconds": 3.0},
                      "sample": {"ms_mean": 5.0, "count": 100, "seconds": 0.5}}
    assert gpucheck.step_phases(gpucheck.parse_prom("sluice_rows_done_total 3\n")) is None


def smi_line(t, util, mem):
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t)) + f".000, 0, {util}, {mem}\n"


def test_gpu_busy_counts_only_the_generation_window(tmp_path):
    t0 = 1_800_000_000.0
    with open(tmp_path / "smi.csv", "w") as f:
        f.write(smi_line(t0, 0, 500))           # loading the model: not counted
        f.write(smi_line(t0 + 10, 90, 30000))
        f.write(smi_line(t0 + 11, 70, 31000))
        f.write(smi_line(t0 + 30, 0, 31000))    # after the last row
        f.write("garbage line\n")
    busy, mem, n = gpucheck.smi_busy(str(tmp_path / "smi.csv"), t0, t0 + 5, t0 + 20)
    assert (busy, mem, n) == (80.0, 31000.0, 2)


def write_run(tmp_path, name, ips, tps, ok=True):
    ro = tmp_path / f"out-{name}"
    ro.mkdir()
    if ok:
        (ro / "_summary.json").write_text(json.dumps({
            "status": "ok", "rows": {"ok": 10, "failed": 0},
            "seconds": {"run": 5.0, "model_load": 1.0},
            "throughput": {"rows_per_s": ips, "generated_tokens_per_s": tps},
            "tokens": {"prompt": 5350, "generated": 2000}}))
        (ro / "_metrics.prom").write_text(PROM)
    return ro


def result(tmp_path, name, model, ro, stopped="done"):
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "gpucheck.py"), "result",
                        "--name", name, "--model", model, "--rc", "0", "--t0", "100", "--t1", "110",
                        "--run-out", str(ro), "--out", str(tmp_path), "--stopped", stopped,
                        "--args", "--parallel 128"], capture_output=True, text=True, check=True)
    return r.stdout


def test_result_and_final_line_with_ratios_to_the_baseline(tmp_path):
    lines = [result(tmp_path, "q3b-p128", "qwen3b-like", write_run(tmp_path, "q3b-p128", 16.4, 3280.0)),
             result(tmp_path, "s256-p128", "smolvlm-256m", write_run(tmp_path, "s256-p128", 50.0, 10000.0)),
             '{"run":"q3b-p64","skipped":"deadline"}\n']
    r = json.loads(lines[0])
    assert (r["images_per_s"], r["generated_tok_per_s"], r["rows_ok"], r["load_s"]) == (16.4, 3280.0, 10, 1.0)
    assert r["step_phases"]["decode"]["ms_mean"] == 15.0 and r["metrics_from"] == "final"
    (tmp_path / "results.jsonl").write_text("".join(lines))
    (tmp_path / "baseline.json").write_text(json.dumps(
        {"peer": "hf-transformers-generate", "images_per_s": 8.2, "generated_tokens_per_s": 1640.0}) + "\n")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "gpucheck.py"), "final",
                          str(tmp_path), json.dumps({"check": "sluice-gpu", "mode": "test"})],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("\n") == 1                 # one line, one object
    doc = json.loads(out)
    assert [x["run"] for x in doc["runs"]] == ["q3b-p128", "s256-p128"]
    assert doc["skipped"] == [{"run": "q3b-p64", "skipped": "deadline"}]
    # only the baseline's own model family gets a ratio
    assert doc["ratios"] == {"q3b-p128": {"images_per_s": 2.0, "generated_tok_per_s": 2.0}}
    assert json.loads((tmp_path / "final.json").read_text()) == doc


def test_killed_run_falls_back_to_the_last_scrape(tmp_path):
    ro = write_run(tmp_path, "q3b-p255", 0, 0, ok=False)
    (tmp_path / "series-q3b-p255.tsv").write_text("100.0\t0\t0\t0.5\n120.0\t40\t8000\t0.7\n")
    r = json.loads(result(tmp_path, "q3b-p255", "qwen3b-like", ro, stopped="killed"))
    assert r["from_metrics"] is True and r["rows_ok"] == 40
    assert (r["images_per_s"], r["generated_tok_per_s"]) == (2.0, 400.0)
    assert r["gpu_busy_sluice_pct"] == 60.0 and r["stopped"] == "killed"


def test_run_sh_without_a_payload_still_ends_with_one_json_line(tmp_path):
    env = dict(os.environ, CPU_SMOKE="1", PAYLOAD=str(tmp_path / "none"), OUT=str(tmp_path / "out"),
               WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["check"] == "sluice-gpu" and doc["mode"] == "cpu-smoke"
    assert "no payload at" in doc["error"] and "make gpu-pack" in doc["error"]
    assert doc["runs"] == []
