"""deploy/grafana/sluice-dashboard.json against a real run: a real Prometheus
(Debian's package, on loopback) scrapes a running `sluice caption` job every
second; once it holds at least 10 s of scrapes, every PromQL expression in
the dashboard (each panel's targets, with Grafana's variables filled in) is
evaluated through /api/v1/query at a moment the job is live and must return
a non-empty result. The types Prometheus read from the exposition must be
the types docs/metrics.md documents, and when the job has ended
sluice_rows_done_total in OUT/_metrics.prom must equal the rows in
OUT/part-00000.jsonl, and the failed counters the rows with an error (the
input holds one corrupt image, so the failure panels have data). Where
NVIDIA's NVML cannot be loaded (no driver: this is checked independently of
sluice, with ctypes) the machine has no GPU series to show, so the
expressions and documented names over sluice_gpu_* are skipped, and said so;
with NVML they are checked like every other. Also checks the dashboard's shape (datasource
variable, core panel types only, $__rate_interval in every range) and
deploy/prometheus.yml. Every wait is bounded (120 s for the whole test);
both processes are stopped at the end."""
import ctypes
import json
import re
import signal
import subprocess
import time

import pytest

from conftest import REPO, BackgroundRun, sample_copies
from prom import Prometheus

DASHBOARD = REPO / "deploy" / "grafana" / "sluice-dashboard.json"
PROM_CONFIG = REPO / "deploy" / "prometheus.yml"
METRICS_DOC = REPO / "docs" / "metrics.md"
JOB = "sluice_e2e"
RATE_INTERVAL = "15s"     # what $__rate_interval becomes (>= 4 scrapes at 1 s)
COPIES = 400              # the samples this many times: 6,400 rows, ~40 s quiet on 2 cores (a
                          # loaded machine: the budget ends it by SIGINT, below)
BUDGET_S = 120            # the whole test
MIN_SCRAPE_S = 10         # scrapes of the live job before the queries
# Grafana's built-in panels (no plugins may be needed to show the dashboard).
CORE_PANELS = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text",
               "heatmap", "piechart", "barchart", "state-timeline", "histogram"}


def nvml_present() -> bool:
    """NVML loads and initialises: the machine can have sluice_gpu_* series."""
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        return lib.nvmlInit_v2() == 0
    except (OSError, AttributeError):
        return False


GPU_PREFIX = "sluice_gpu_"
# An MPI job's series exist on rank 0 of a job of several ranks only:
# tests/e2e/test_mpi.py checks the dashboard's queries over them.
JOB_PREFIX = "sluice_job_"


# ------------------------------------------------------------------ parsing
def documented_types() -> dict:
    """name -> type from every `| name | type | ... |` table in docs/metrics.md."""
    types = {}
    in_table = False
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["name", "type"]:
            in_table = True
            continue
        if not in_table or set(cells[0]) <= {"-", " ", ":"}:
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            types[name.split("{")[0]] = cells[1]
    assert types, f"no metric tables found in {METRICS_DOC}"
    return types


def dashboard_targets(dash: dict) -> list:
    """(panel title, refId, expr) for every target of every panel, nested rows included."""
    found = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append((p.get("title", "?"), t.get("refId", "?"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    return found


def substitute(expr: str, values: dict) -> str:
    """Fill in Grafana's variables ($x, ${x}, ${x:fmt}, [[x]])."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in values, f"unknown variable {m.group(0)} in {expr}"
        return values[name]
    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)
    assert "$" not in out, out
    return out


def metric_names(expr: str) -> set:
    return set(re.findall(r"\b((?:vllm:|sluice_|process_)[A-Za-z0-9_:]*)", expr))


def base_name(name: str, documented: dict) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and documented.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name


# ------------------------------------------------------------ static checks
def test_dashboard_shape_and_prometheus_config():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert not dash.get("__requires") or all(
        r.get("type") != "panel" or r.get("id") in CORE_PANELS for r in dash["__requires"])

    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            assert p["type"] in CORE_PANELS, (p["title"], p["type"])
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
                assert p["targets"], p["title"]
                for t in p["targets"]:
                    assert t["datasource"]["uid"] == "${datasource}", p["title"]
            walk(p.get("panels", []))
    walk(dash["panels"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"

    documented = documented_types()
    targets = dashboard_targets(dash)
    for title, ref, expr in targets:
        # every range is Grafana's $__rate_interval, never a fixed window
        assert re.findall(r"\[([^\]]+)\]", expr.replace("[[", "").replace("]]", "")) == \
            ["$__rate_interval"] * expr.count("[$__rate_interval]"), (title, expr)
        for name in metric_names(expr):
            assert base_name(name, documented) in documented, \
                f"{title}/{ref}: {name} is not in docs/metrics.md"
    # The panels the dashboard is for.
    all_exprs = "\n".join(e for _, _, e in targets)
    for needle in ["rate(sluice_stage_rows_out_total", "sluice_stage_queue_rows",
                   "sluice_stage_queue_bytes", "sluice_bytes_in_flight",
                   "sluice_memory_budget_bytes",
                   "sluice_stage_busy_seconds_total", "sluice_stage_idle_seconds_total",
                   "sluice_stage_blocked_seconds_total", "sluice_stage_rows_failed_total",
                   "vllm:time_to_first_token_seconds_bucket",
                   "vllm:inter_token_latency_seconds_bucket",
                   "vllm:e2e_request_latency_seconds_bucket", "vllm:generation_tokens_total",
                   "vllm:prompt_tokens_total", "vllm:kv_cache_usage_perc",
                   "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
                   "vllm:num_requests_running", "vllm:num_requests_waiting",
                   "finished_reason", "process_resident_memory_bytes", "process_cpu_seconds_total",
                   "sluice_rows_failed_by_class_total", "sum by (stage, class)",
                   "sluice_gpu_utilization_ratio", "sluice_gpu_memory_used_bytes",
                   "sluice_engine_step_seconds_sum", "sluice_engine_step_seconds_count",
                   "sluice_task_tokens_total", "sum by (task)"]:
        assert needle in all_exprs, needle
    for q in ("0.5", "0.9", "0.99"):
        for hist in ("time_to_first_token", "inter_token_latency", "e2e_request_latency"):
            assert (f"histogram_quantile({q}, sum by (le) (rate(vllm:{hist}_seconds_bucket"
                    in all_exprs), (q, hist)

    # deploy/prometheus.yml: the default target, 5 s, valid for promtool when present.
    cfg = PROM_CONFIG.read_text(encoding="utf-8")
    assert "'127.0.0.1:9797'" in cfg and re.search(r"^\s*scrape_interval:\s*5s", cfg, re.M)
    promtool = subprocess.run(["sh", "-c", "command -v promtool"], capture_output=True, text=True)
    if promtool.returncode == 0:
        r = subprocess.run([promtool.stdout.strip(), "check", "config", str(PROM_CONFIG)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------- the live run
def prom_final_values(text: str, name: str) -> float:
    vals = [float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")]
    assert vals, f"{name} not in _metrics.prom"
    return sum(vals)


def test_every_dashboard_query_returns_data_from_a_live_job(sluice, tmp_path):
    start = time.monotonic()

    def left():
        return BUDGET_S - (time.monotonic() - start)

    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    targets = dashboard_targets(dash)
    documented = documented_types()
    assert len(targets) >= 20, "the dashboard lost its panels"

    # One corrupt image: the failure panels must have data while the job is live.
    n_rows = sample_copies(tmp_path / "in", COPIES, corrupt=True)
    out = tmp_path / "out"
    # --threads 1: with the default (every core), llama.cpp's threads spin on
    # each other when the machine is loaded and a run can be 100x slower.
    run = BackgroundRun(sluice, tmp_path / "in", out, "--max-tokens", "48", "--threads", "1",
                        "--show", "0", log_dir=tmp_path)
    proc, sluice_log = run.proc, run.log

    ended_by = None
    try:
        port = run.port(timeout=min(20, left()))
        instance = f"127.0.0.1:{port}"
        job_sel = f'{{job="{JOB}"}}'
        values = {"__rate_interval": RATE_INTERVAL, "datasource": "prometheus",
                  "job": JOB, "instance": instance, "rank": ".*"}
        exprs = [(title, ref, substitute(e, values)) for title, ref, e in targets]
        gpu = nvml_present()
        if not gpu:
            skipped = [f"{t}/{r}" for t, r, e in exprs if GPU_PREFIX in e]
            print(f"\nNVML not loadable here (no NVIDIA driver): no GPU series exist, so "
                  f"{len(skipped)} GPU expressions are not required to return data: {skipped}")
            exprs = [(t, r, e) for t, r, e in exprs if GPU_PREFIX not in e]
        exprs = [(t, r, e) for t, r, e in exprs if JOB_PREFIX not in e]

        with Prometheus(tmp_path / "prom", {JOB: [instance]}, scrape_interval="1s") as prom:
            prom.wait_ready(seconds=min(30, left()))

            def live(waiting_for):
                if proc.poll() is not None:
                    pytest.fail(f"the job ended (exit {proc.returncode}) while waiting for "
                                f"{waiting_for}; if it ran too fast, raise COPIES. {sluice_log()}")
                return True

            # At least MIN_SCRAPE_S seconds of successful scrapes of the live job.
            def scraped_long_enough():
                live(f"{MIN_SCRAPE_S} s of scrapes")
                r = prom.query(f"sum_over_time(up{job_sel}[1m])")
                return r and float(r[0]["value"][1]) >= MIN_SCRAPE_S + 1
            prom.wait_for(f"{MIN_SCRAPE_S} s of scrapes", scraped_long_enough,
                          seconds=min(45, left() - 30))

            # Every expression at one moment `at` when the job was live and its
            # last scrape up to then succeeded (so no series is stale yet). An
            # empty result is retried twice, a second apart, then it fails.
            results, empty, tries = {}, None, 0
            deadline = time.monotonic() + max(5, min(30, left() - 25))
            while tries < 3 and time.monotonic() < deadline:
                live("a moment to evaluate the dashboard's queries")
                at = time.time()
                up = prom.query(f"up{job_sel}", at=at)
                if not (up and up[0]["value"][1] == "1"):
                    time.sleep(0.5)
                    continue
                tries += 1
                results = {(t, r): (e, prom.query(e, at=at, timeout=10)) for t, r, e in exprs}
                if proc.poll() is not None:
                    continue  # ended while querying: `at` may be after its last scrape
                empty = [f"{t}/{r}: {e}" for (t, r), (e, res) in results.items() if not res]
                if not empty:
                    break
                time.sleep(1)
            assert tries and empty == [], ("dashboard queries with no data from the live job:\n  "
                                           + "\n  ".join(empty or ["(none evaluated)"]))
            finite = sum(1 for _, res in results.values()
                         if any(s["value"][1] not in ("NaN", "+Inf", "-Inf") for s in res))
            print(f"\n{len(results)} dashboard expressions evaluated, all non-empty; "
                  f"{finite} with a finite value; {time.monotonic() - start:.1f} s into the test")

            # Variables: label_values(metric, label) must list the job and the target.
            for var in dash["templating"]["list"]:
                if var["type"] != "query" or JOB_PREFIX in var["definition"]:
                    continue
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"].strip())
                assert m, var["definition"]
                names = prom.api(f"label/{m.group(2)}/values",
                                 **{"match[]": substitute(m.group(1), values)})
                assert values[var["name"]] in names, (var["name"], names)

            # Types as Prometheus read them from the exposition, against the docs.
            meta = prom.api("targets/metadata", match_target=job_sel)
            seen = {m["metric"]: m["type"] for m in meta}
            wrong = {n: (seen[n], t) for n, t in documented.items() if n in seen and seen[n] != t}
            assert not wrong, f"Prometheus type != documented type: {wrong}"
            missing = sorted(n for n in documented if n not in seen
                             and (gpu or not n.startswith(GPU_PREFIX))
                             and not n.startswith(JOB_PREFIX))
            assert not missing, f"documented but not scraped: {missing}"
            print(f"{len(documented)} documented metrics scraped with their documented types")

        # The job ends by itself (~40 s quiet); if the machine is too slow for the
        # budget, a first SIGINT finishes the rows in flight and writes them.
        try:
            proc.wait(timeout=max(1, left() - 30))
            ended_by = "itself"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=max(5, left()))
            ended_by = "SIGINT"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    print(f"job ended by {ended_by} (exit {proc.returncode}) after "
          f"{time.monotonic() - start:.1f} s")
    # 3: finished with failed rows (a SIGINT that lands as the job finishes
    # by itself still exits as if it had not come)
    assert proc.returncode in ((3,) if ended_by == "itself" else (3, 130)), sluice_log()
    lines = (out / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    failed = sum(1 for line in lines if json.loads(line)["error"])
    final = (out / "_metrics.prom").read_text(encoding="utf-8")
    assert prom_final_values(final, "sluice_rows_done_total") == len(lines) > 0
    assert prom_final_values(final, "sluice_rows_failed_total") == failed == 1
    assert prom_final_values(final, "sluice_rows_failed_by_class_total") == failed
    if ended_by == "itself":
        assert len(lines) == n_rows
