"""A real Prometheus (Debian's `prometheus` package) for the end-to-end
tests: started on a free loopback port with a generated config and a
temporary storage folder, queried through its HTTP API, stopped at the end.
Every wait is bounded. Use it as a context manager:

    with Prometheus(tmp_path, {"sluice": ["127.0.0.1:9797"]}) as prom:
        prom.wait_ready()
        prom.query("up")
"""
import json
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from localserver import free_port


class Prometheus:
    def __init__(self, workdir: pathlib.Path, targets: dict, scrape_interval: str = "1s",
                 bearer_files: dict | None = None):
        """targets: job name -> list of 'HOST:PORT'; bearer_files: job name ->
        a file whose token that job's scrapes bring (authorization)."""
        binary = shutil.which("prometheus")
        assert binary, ("prometheus is not installed: run scripts/setup.sh "
                        "(Debian package prometheus)")
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "prometheus.yml"
        self.log = self.workdir / "prometheus.log"
        lines = ["global:",
                 f"  scrape_interval: {scrape_interval}",
                 f"  evaluation_interval: {scrape_interval}",
                 "scrape_configs:"]
        for job, addrs in targets.items():
            lines += [f"  - job_name: {job}",
                      f"    scrape_interval: {scrape_interval}",
                      f"    scrape_timeout: {scrape_interval}",
                      "    static_configs:",
                      "      - targets: [" + ", ".join(f"'{a}'" for a in addrs) + "]"]
            if bearer_files and job in bearer_files:
                lines += ["    authorization:", "      type: Bearer",
                          f"      credentials_file: '{bearer_files[job]}'"]
        self.config.write_text("\n".join(lines) + "\n")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        with open(self.log, "w") as log_fp:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log_fp, stderr=subprocess.STDOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_tail(self, n=2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # ------------------------------------------------------------ HTTP API
    def api(self, path: str, timeout=5, **params):
        """GET /api/v1/PATH?params; the `data` of a successful answer."""
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query, with Prometheus's reason
            body = json.loads(e.read() or b"{}")
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float | None = None, timeout=5) -> list:
        """An instant query (at `at`, Unix seconds, or now); the result vector."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", timeout=timeout, **params)
        return data["result"]

    def wait_for(self, what: str, check, seconds: float = 60, every: float = 0.5):
        """Call check() until it returns something truthy (returned) or fail
        after `seconds`; connection errors count as not yet."""
        deadline = time.monotonic() + seconds
        last = None
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                result = check()
                if result:
                    return result
                last = result
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = e
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}: last {last!r}; "
                            f"prometheus log: {self.log_tail()}")
            time.sleep(every)

    def wait_ready(self, seconds: float = 30):
        def ready():
            with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:
                return resp.status == 200
        return self.wait_for("prometheus ready", ready, seconds)
