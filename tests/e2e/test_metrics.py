"""End-to-end tests of the metrics endpoint: tests/tools/metrics_demo
(SLUICE_METRICS_DEMO, set by ctest) serves a registry that threads keep
updating. Its exposition must parse with the Prometheus Python client's
parser with the right types and exact values, and a real Prometheus
(Debian's package) must scrape it and answer queries about it. Every wait
is bounded; every process started here is stopped at the end."""
import os
import pathlib
import queue
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prom import Prometheus

REPO = pathlib.Path(__file__).resolve().parents[2]
ODD_MODEL = 'demo "quoted" \\ model\nv1'  # every escape the text format has
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture(scope="module")
def demo_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SLUICE_METRICS_DEMO",
                                       REPO / "build" / "tests" / "tools" / "metrics_demo"))
    assert path.exists(), f"{path} not built: run make build"
    return path


class Demo:
    """metrics_demo running in the background; its stdout lines in a queue."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([str(binary), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self.line(timeout=30)
        assert first.strip().isdigit(), f"first line is not a port: {first!r}"
        self.port = int(first)
        self.url = f"http://127.0.0.1:{self.port}"

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"metrics_demo printed nothing for {timeout} s")
        if line is None:
            raise AssertionError(f"metrics_demo exited ({self.proc.wait(5)}): "
                                 f"{self.proc.stderr.read()}")
        return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def get(url, method="GET", timeout=10):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read().decode("utf-8")


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam, name, **labels):
    return [s for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(fam, name, **labels) -> float:
    found = samples(fam, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples in {fam.samples}"
    return found[0].value


def test_exposition_parses_with_exact_values(demo_bin):
    # 4 threads x 5 batches x 100 updates, then the totals line; serving goes on.
    demo = Demo(demo_bin, "--threads", 4, "--batches", 5, "--seconds", 60)
    try:
        totals = json.loads(demo.line(timeout=30))
        assert totals == {"requests": 2000, "tokens": 6000, "observations": 2000, "rows": 2000}

        status, ctype, text = get(demo.url + "/metrics")
        assert status == 200
        assert ctype == CONTENT_TYPE
        fams = families(text)

        # The parser drops a counter's _total from the family name.
        assert fams["vllm:request_success"].type == "counter"
        assert fams["vllm:generation_tokens"].type == "counter"
        assert fams["vllm:num_requests_running"].type == "gauge"
        assert fams["vllm:e2e_request_latency_seconds"].type == "histogram"
        assert fams["sluice_queue_depth"].type == "gauge"
        assert fams["sluice_rows"].type == "counter"
        for name, typ in [("process_cpu_seconds", "counter"),
                          ("process_resident_memory_bytes", "gauge"),
                          ("process_virtual_memory_bytes", "gauge"),
                          ("process_start_time_seconds", "gauge"),
                          ("process_open_fds", "gauge")]:
            assert fams[name].type == typ, name
        assert fams["process_resident_memory_bytes"].samples[0].value > 1e5
        assert "\n" in fams["vllm:e2e_request_latency_seconds"].documentation  # HELP escape

        # Threads 0 and 2 use the odd model name, 1 and 3 "plain": each model
        # gets 2 x 500 requests, 1 in 10 finishing for "length".
        succ = fams["vllm:request_success"]
        for model in (ODD_MODEL, "plain"):
            assert value(succ, "vllm:request_success_total",
                         model_name=model, finished_reason="stop") == 900
            assert value(succ, "vllm:request_success_total",
                         model_name=model, finished_reason="length") == 100
            assert value(fams["vllm:generation_tokens"], "vllm:generation_tokens_total",
                         model_name=model) == 3000
            assert value(fams["vllm:num_requests_running"], "vllm:num_requests_running",
                         model_name=model) == 0

            lat = fams["vllm:e2e_request_latency_seconds"]
            buckets = samples(lat, "vllm:e2e_request_latency_seconds_bucket", model_name=model)
            les = [b.labels["le"] for b in buckets]
            assert les == ["0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
            counts = [b.value for b in buckets]
            assert counts == sorted(counts), "buckets must be cumulative"
            assert counts[-1] == 1000
            assert 0 < counts[0] < counts[-1]
            assert value(lat, "vllm:e2e_request_latency_seconds_count", model_name=model) == 1000
            total = value(lat, "vllm:e2e_request_latency_seconds_sum", model_name=model)
            assert 1000 * 0.001 <= total <= 1000 * 2.001
        assert value(fams["sluice_rows"], "sluice_rows_total") == totals["rows"]
        # Callback gauges: requests % 17 (+ 100 for "engine").
        depth = fams["sluice_queue_depth"]
        assert value(depth, "sluice_queue_depth", stage="decode") == 2000 % 17
        assert value(depth, "sluice_queue_depth", stage="engine") == 100 + 2000 % 17

        # Families and children come in a stable order (and the updates are
        # over, so only the process_* values may change).
        def stable(t):
            return [line for line in t.splitlines() if "process_" not in line]
        assert stable(get(demo.url + "/metrics")[2]) == stable(text)

        with pytest.raises(urllib.error.HTTPError) as e:
            get(demo.url + "/nope")
        assert e.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as e:
            get(demo.url + "/metrics", method="POST")
        assert e.value.code == 405
    finally:
        assert demo.stop() == 0


def test_real_prometheus_scrapes_the_demo(demo_bin, tmp_path):
    demo = Demo(demo_bin, "--threads", 2, "--seconds", 120)
    try:
        with Prometheus(tmp_path / "prom", {"sluice_demo": [f"127.0.0.1:{demo.port}"]}) as prom:
            run_against_prometheus(prom, demo)
    finally:
        assert demo.stop() == 0


def run_against_prometheus(prom, demo):
    prom.wait_ready()
    up = prom.wait_for("the demo target up",
                       lambda: [r for r in prom.query('up{job="sluice_demo"}')
                                if r["value"][1] == "1"])
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{demo.port}"

    # A counter, with vLLM's ':' name and the label value that needs every
    # escape, read back through PromQL's own string escapes.
    odd = 'demo \\"quoted\\" \\\\ model\\nv1'
    res = prom.wait_for("the demo's counter",
                        lambda: prom.query(
                            f'sum(vllm:request_success_total{{model_name="{odd}"}})'))
    assert float(res[0]["value"][1]) > 0
    res = prom.query('vllm:request_success_total{finished_reason="stop"}')
    assert sorted(r["metric"]["model_name"] for r in res) == sorted([ODD_MODEL, "plain"])

    # A quantile from the histogram: needs two scrapes inside the window.
    expr = ("histogram_quantile(0.9, sum by (le) "
            "(rate(vllm:e2e_request_latency_seconds_bucket[5s])))")

    def quantile():
        r = prom.query(expr)
        return r if r and r[0]["value"][1] not in ("NaN", "+Inf") else None
    q = float(prom.wait_for("histogram_quantile", quantile)[0]["value"][1])
    # Latencies are 0.001 + 2 r^3: the 0.9 quantile is 1.46; interpolated
    # inside the (1, 2.5] bucket it lands between the bounds.
    assert 1.0 <= q <= 2.5, q

    # The process metrics and the callback gauge come through too.
    assert float(prom.query("process_resident_memory_bytes")[0]["value"][1]) > 1e5
    assert len(prom.query("sluice_queue_depth")) == 2
