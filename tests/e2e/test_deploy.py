"""End-to-end tests of deploy/ (docs/deploy.md): the Slurm array script and
the Kubernetes Indexed Job, run without Slurm or a cluster. Each array task
or pod index is run here as the scheduler would run it (the task id in the
environment), over one folder of images: the union of their outputs holds
every input exactly once, and a task run again (a requeue) writes nothing
new. kubectl cannot validate without an API server (none here), so the
manifest's shape is checked field by field instead."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from conftest import REPO, TINY, run_beside_a_holder, sample_copies

N = 3


def write_job(tmp_path, inputs, config_dir):
    job = config_dir / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"paths": [str(inputs)], "shard_size": 2},
        "llama": {"model": str(TINY / "model.gguf"), "mmproj": str(TINY / "mmproj.gguf")},
        "sampling": {"max_tokens": 2},
        "metrics": {"addr": "off"},
    }))
    return job


def ids_under(out):
    ids = []
    for part in sorted(pathlib.Path(out).glob("shard-*/part-*.jsonl")):
        ids += [json.loads(line)["id"] for line in part.read_text().splitlines()]
    return ids


def expected(inputs):
    return Counter(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file())


def test_the_slurm_array_script_covers_every_input_once(sluice, tmp_path):
    inputs = tmp_path / "in"
    sample_copies(inputs, 2)
    job = write_job(tmp_path, inputs, tmp_path)
    out = tmp_path / "out"
    script = REPO / "deploy" / "slurm" / "sluice-array.sbatch"
    # The time limit's SIGKILL comes after a SIGTERM early enough for
    # sluice's 30 s drain (docs/executor.md), sent to the batch script,
    # which is sluice (exec): a signal to its steps alone reaches no one.
    warn = re.search(r"^#SBATCH --signal=B:TERM@(\d+)$", script.read_text(), re.M)
    assert warn and int(warn.group(1)) > 30, "the time limit kills a run in the middle of a commit"
    assert re.search(r'^exec "\$sluice" ', script.read_text(), re.M)
    for task in range(N):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT=str(N),
                   SLUICE=str(pathlib.Path(sluice.binary).resolve()))
        r = subprocess.run(["bash", str(script), str(job), str(inputs), str(out),
                            "--metrics-addr", "off"], env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    assert sorted((out).glob("shard-*")) == [out / f"shard-{t:05d}" for t in range(N)]
    assert Counter(ids_under(out)) == expected(inputs)
    # A requeued task resumes: nothing left, nothing written twice.
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT=str(N),
               SLUICE=str(pathlib.Path(sluice.binary).resolve()))
    r = subprocess.run(["bash", str(script), str(job), str(inputs), str(out),
                        "--metrics-addr", "off"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Counter(ids_under(out)) == expected(inputs)
    # Outside an array it says what is missing.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(script), str(job), str(inputs), str(out)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SLURM_ARRAY_TASK_ID" in r.stderr


def test_the_docs_readers_take_the_array_tasks_parquet_parts_together(sluice, tmp_path,
                                                                    monkeypatch):
    """docs/deploy.md's two readers of an array job's folders, run as
    written over two tasks' Parquet outputs: each counts every row once.
    Its pyarrow line, given the folder 'out', failed on the side files
    beside the parts ("Could not read schema from
    'out/shard-00000/metrics.prom'") until they were named with a leading
    '_', which pyarrow's discovery skips."""
    import duckdb
    inputs = tmp_path / "in"
    n = sample_copies(inputs, 1)
    for task in range(2):
        r = sluice.caption(inputs, tmp_path / "out" / f"shard-{task:05d}", "--input-shard",
                           f"{task}/2", "--format", "parquet", "-n", "1", "--metrics-addr", "off")
        assert r.returncode == 0, r.stderr[-2000:]
    doc = (REPO / "docs" / "deploy.md").read_text()
    block = doc.split("Readers take the folders")[1].split("```sh\n")[1].split("```")[0]
    duck, py = block.strip().splitlines()
    assert duck.startswith('duckdb -c "') and py.startswith('python -c "'), block
    monkeypatch.chdir(tmp_path)  # the readers name the folder as 'out'
    assert duckdb.connect().execute(duck[len('duckdb -c "'):-1]).fetchone()[0] == n
    r = subprocess.run([sys.executable, "-c", py[len('python -c "'):-1]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str(n), r.stderr[-2000:]


def test_the_kubernetes_indexed_job_covers_every_input_once(sluice, tmp_path):
    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / "sluice-indexed-job.yaml").read_text())
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    shards = int(next(e["value"] for e in container["env"] if e["name"] == "SHARDS"))
    assert spec["completions"] == shards == spec["parallelism"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == set(mounts)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The port the pod declares for Prometheus is one sluice serves on the
    # pod's address: its default, 127.0.0.1, is unreachable from outside.
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    words = container["args"][0].split()
    assert "--metrics-addr" in words, "the container serves /metrics on loopback only"
    assert words[words.index("--metrics-addr") + 1] == f"0.0.0.0:{metrics_port}"

    # The container's command, run for every index as the pods would.
    inputs = tmp_path / "in"
    sample_copies(inputs, 2)
    data, config = tmp_path / "data", tmp_path / "config"
    config.mkdir()
    write_job(tmp_path, inputs, config)
    command, env = pod_command(sluice, tmp_path, container, config, data)
    for index in range(shards):
        r = subprocess.run(command, env=dict(env, JOB_COMPLETION_INDEX=str(index)),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    assert Counter(ids_under(data / "out")) == expected(inputs)


def pod_command(sluice, tmp_path, container, config, data):
    """The Indexed Job's container command and environment as a pod runs
    them, with its volumes mapped to folders here, sluice on the PATH and
    /metrics on a free loopback port; JOB_COMPLETION_INDEX is the caller's."""
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "sluice").exists():
        (bindir / "sluice").symlink_to(pathlib.Path(sluice.binary).resolve())
    shards = next(e["value"] for e in container["env"] if e["name"] == "SHARDS")
    command = container["command"] + [container["args"][0]
                                      .replace(mounts["config"], str(config))
                                      .replace(mounts["data"], str(data))
                                      .replace(f"0.0.0.0:{metrics_port}", "127.0.0.1:0")]
    return command, dict(os.environ, SHARDS=shards, PATH=f"{bindir}:{os.environ['PATH']}")


def test_the_indexed_jobs_failure_policy_fits_sluices_exit_codes(sluice, tmp_path):
    """The Indexed Job retried what no retry can fix and counted what was
    not the job's fault: a wrong job file (exit 2) ran its three retries,
    model load and all; a preempted or drained pod used one up. Its pods'
    replacements started while the old pod still drained after SIGTERM
    (the Job's default), holding the folder's ledger, so the new one was
    refused (exit 2, now 75) and a retry was lost; and the kubelet's 30 s grace
    equalled sluice's own drain, its SIGKILL landing on the final commit.
    The policy is checked against what sluice exits with, run here as a
    pod runs it."""
    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / "sluice-indexed-job.yaml").read_text())
    spec = manifest["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec.get("podReplacementPolicy") == "Failed", "a replacement starts beside its draining pod"
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    fail_index = [r for r in rules if r["action"] == "FailIndex"]
    assert len(fail_index) == 1, "no rule fails an index that a retry cannot fix"
    codes = fail_index[0]["onExitCodes"]
    assert codes["containerName"] == container["name"] and codes["operator"] == "In"
    assert any(r["action"] == "Ignore" and {"type": "DisruptionTarget"} in r.get("onPodConditions", [])
               for r in rules), "a preempted or evicted pod counts against the index's retries"
    # sluice drains for 30 s after SIGTERM (docs/executor.md), then commits.
    assert pod.get("terminationGracePeriodSeconds", 30) > 30

    inputs = tmp_path / "in"
    sample_copies(inputs, 24)  # 48 rows for index 0 of 8: seconds, time for the stop
    data, config = tmp_path / "data", tmp_path / "config"
    config.mkdir()
    job = write_job(tmp_path, inputs, config)
    command, env = pod_command(sluice, tmp_path, container, config, data)
    env["JOB_COMPLETION_INDEX"] = "0"

    # A job file that no retry fixes fails the index at once.
    good = job.read_text()
    job.write_text(good + "max_tokenz: 4\n")
    r = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode in codes["values"], (r.returncode, r.stderr[-2000:])
    job.write_text(good)
    # A run whose rows failed (3) is retried: a retry reads what a listing
    # cut short left (test_hostile_peers), else exits 3 again until the
    # index's retries run out, never 0 over failed rows (test_resume's
    # test_failed_rows_count_as_done_and_the_rerun_still_exits_3).
    assert 3 not in codes["values"]

    # A pod started while another run holds the folder's ledger (a stale
    # pod on a node that lost its kubelet) is retried: that run ends.
    out = data / "out" / "shard-00000"
    r = run_beside_a_holder(command, env, timeout=600)
    assert r.returncode == 75, (r.returncode, r.stderr[-2000:])
    assert "is in use by another sluice run" in r.stderr, r.stderr[-2000:]
    assert r.returncode not in codes["values"]
    shutil.rmtree(out)  # the holder committed nothing; the stop below waits for a summary

    # A pod told to stop (SIGTERM to the container's process, as the kubelet
    # sends it) is retried: its exit is not one that fails the index.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not (out / "_summary.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the stop"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert proc.returncode not in codes["values"]
    r = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_mpi_slurm_script_runs_one_job(sluice, tmp_path):
    """deploy/mpi/sluice-mpi.sbatch without Slurm: `srun` on the PATH is a
    stand-in that starts the same command under Open MPI's mpirun (2 ranks),
    as srun would start the tasks. One job: one ledger, one summary, every
    input once; rank 0's progress speaks for the 2 ranks."""
    import shutil

    import pytest
    mpirun = shutil.which("mpirun")
    out = subprocess.run([str(sluice.binary), "--version"], capture_output=True, text=True).stdout
    if not mpirun or "(MPI)" not in out:
        pytest.skip("sluice built without MPI, or no mpirun")
    inputs = tmp_path / "in"
    sample_copies(inputs, 3)
    job = write_job(tmp_path, inputs, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/sh\n# srun's stand-in: drop --mpi=..., start 2 ranks with mpirun\n"
        "[ \"${1#--mpi=}\" != \"$1\" ] && shift\n"
        f"exec {mpirun} --allow-run-as-root --oversubscribe -n 2 -x ASAN_OPTIONS \"$@\"\n")
    (bin_dir / "srun").chmod(0o755)
    out_dir = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SLUICE=str(pathlib.Path(sluice.binary).resolve()),
               ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    r = subprocess.run(["bash", str(REPO / "deploy" / "mpi" / "sluice-mpi.sbatch"), str(job),
                        str(inputs), str(out_dir), "--metrics-addr", "off"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = []
    for part in sorted(out_dir.glob("part-*.jsonl")):
        ids += [json.loads(line)["id"] for line in part.read_text().splitlines()]
    assert Counter(ids) == expected(inputs)
    assert "of 2 ranks done]" in r.stderr, r.stderr[-2000:]
    assert list(out_dir.glob("_sluice_ledger.sqlite")), "one ledger, rank 0's"
    summary = json.loads((out_dir / "_summary.json").read_text())
    assert summary["rows"]["total"] == len(ids)


ALERTS = REPO / "deploy" / "sluice-alerts.yml"


def alert_scenarios() -> dict:
    """`promtool test rules` input: four sluice processes scraped every
    minute for 31 minutes, and the alerts each must have and must not."""
    series = {
        # writes steadily, no failure: never alerts
        "busy": {"read": "0+10x30", "done": "0+10x30", "failed": "0x30", "write_failed": "0x30"},
        # writes 50 rows in 5 minutes, then nothing though it has read more
        "stuck": {"read": "0+12x5 60x25", "done": "0+10x5 50x25", "failed": "0x30",
                  "write_failed": "0x30"},
        # a fifth of its rows fail
        "failing": {"read": "0+10x30", "done": "0+10x30", "failed": "0+2x30",
                    "write_failed": "0x30"},
        # its disk fills at minute 22: 20 rows not written, then no more
        "full": {"read": "0+10x21 210x9", "done": "0+10x21 210x9", "failed": "0x30",
                 "write_failed": "0x21 20x9"},
    }
    input_series = [{"series": f'sluice_rows_{name}_total{{job="sluice",instance="{inst}:9797"}}',
                     "values": values}
                    for inst, names in series.items() for name, values in names.items()]

    def firing(*pairs):
        return [{"labels": f'{{alertname="{a}",alertstate="firing",instance="{i}:9797"}}',
                 "value": 1} for a, i in pairs]

    expr = 'count by (alertname, alertstate, instance) (ALERTS)'
    return {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series,
            "promql_expr_test": [
                # 12 min: the stuck run has written within the last 10
                # minutes; the failing one has failed for over 10.
                {"expr": expr, "eval_time": "12m", "exp_samples": firing(("SluiceRowsFailing", "failing"))},
                # 25 min: stuck for 20 minutes (10 of window, 5 of `for`),
                # the failed write 3 minutes ago.
                {"expr": expr, "eval_time": "25m",
                 "exp_samples": firing(("SluiceRowsFailing", "failing"), ("SluiceStalled", "stuck"),
                                       ("SluiceWriteFailed", "full"))},
            ],
        }],
    }


def test_the_alert_rules_fire_on_a_stalled_run_failing_rows_and_a_failed_write(sluice, tmp_path):
    """deploy/ had a scrape config and a dashboard but no alert: a run that
    stalled (a hung mount, a stuck GPU), one whose rows mostly failed, or
    one whose disk filled paged nobody. deploy/sluice-alerts.yml's rules,
    loaded by deploy/prometheus.yml, are run through `promtool test rules`
    on series of four runs, and each metric they read is one a real run
    exposes."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus: scripts/setup.sh)")
    r = subprocess.run([promtool, "check", "config", str(REPO / "deploy" / "prometheus.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr, "deploy/prometheus.yml loads no rule file"
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(yaml.safe_dump(alert_scenarios()))
    r = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    # The metrics the rules read, as a run exposes them (its final values).
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    out = tmp_path / "out"
    r = subprocess.run([str(sluice.binary), "caption", str(inputs), "-o", str(out),
                        "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
                        "--max-tokens", "2", "--metrics-addr", "off"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    exposed = set(re.findall(r"^# TYPE (\S+) counter$", (out / "_metrics.prom").read_text(), re.M))
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    read = {m for rule in rules for m in re.findall(r"\b(sluice_\w+)", rule["expr"])}
    assert read and read <= exposed, f"not counters a run exposes: {sorted(read - exposed)}"
