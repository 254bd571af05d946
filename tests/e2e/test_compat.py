"""Folders older sluice versions wrote, resumed by this one.

resume.c accepts the fingerprints older versions wrote (FP_* in
src/job/resume.c); test_resume and test_lora check that against a ledger of
today edited by hand. These start from ledgers real older binaries wrote
(tests/e2e/fixtures/old-*/ledger.sql, their `sqlite3 .dump`, with the
commit and the command in its first lines) and their part files, over the
same inputs, and check what docs/output.md (Resume) promises for them: the
same command goes on, no row lost or written twice, the earlier rows kept
byte for byte, a changed setting refused naming only what changed, the
ledger's fingerprint left as the older sluice wrote it (so that sluice can
still resume the folder)."""
import json
import pathlib
import shutil
import sqlite3
import subprocess

from conftest import REPO, SAMPLES

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
IMAGES = ("camera.jpg", "coffee.jpg", "rocket.jpg")


def old_folder(tmp_path: pathlib.Path, name: str, into: str = "out") -> pathlib.Path:
    """tmp_path laid out as the fixture's run was: in/ (three sample images
    and a cut-short broken.jpg), models -> the repository's, the fixture's
    other files; `into` (out/) holds its ledger (from the dump) and its
    parts."""
    src = FIXTURES / name
    inp = tmp_path / "in"
    inp.mkdir()
    for image in IMAGES:
        shutil.copy(SAMPLES / image, inp / image)
    (inp / "broken.jpg").write_bytes((SAMPLES / "coffee.jpg").read_bytes()[:3000])
    (tmp_path / "models").symlink_to(REPO / "models")
    out = tmp_path / into
    out.mkdir()
    with sqlite3.connect(out / "_sluice_ledger.sqlite") as db:
        db.executescript((src / "ledger.sql").read_text())
    db.close()
    for f in src.iterdir():
        if f.name != "ledger.sql":
            shutil.copy(f, (out if f.name.startswith("part-") else tmp_path) / f.name)
    return out


def fingerprint(out: pathlib.Path) -> str:
    db = sqlite3.connect(out / "_sluice_ledger.sqlite")
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0]
    finally:
        db.close()


def lines_by_id(out: pathlib.Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for part in sorted(out.glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            rows.setdefault(json.loads(line)["id"], []).append(line)
    return rows


def went_on_with_hubble(r, out: pathlib.Path, old_parts: dict) -> dict[str, list[str]]:
    """The resume `r` of a fixture's folder, with hubble.jpg added to in/,
    went on: exit 3 (broken.jpg's failed row is still there), the four
    inputs skipped, hubble.jpg answered once, the older parts byte for byte.
    Returns the rows by id."""
    assert r.returncode == 3, r.stderr[-3000:]
    assert "resuming: 4 inputs were already done by an earlier run" in r.stderr, r.stderr[-3000:]
    rows = lines_by_id(out)
    assert sorted(rows) == sorted(IMAGES + ("broken.jpg", "hubble.jpg"))
    assert all(len(v) == 1 for v in rows.values()), rows
    assert json.loads(rows["hubble.jpg"][0])["error"] is None
    assert {p: (out / p).read_bytes() for p in old_parts} == old_parts
    return rows


def test_a_folder_of_sluice_4ff1f38_resumes_and_refuses_naming_what_changed(sluice, tmp_path):
    out = old_folder(tmp_path, "old-4ff1f38-caption")
    old_fp = fingerprint(out)
    old_lines = lines_by_id(out)
    old_parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    assert sorted(old_lines) == sorted(IMAGES + ("broken.jpg",))
    shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")  # new work for the resume

    def caption(*args):
        return subprocess.run([str(sluice.binary), "caption", *args, "-o", "out",
                               "--model", "models/tiny/model.gguf", "--mmproj",
                               "models/tiny/mmproj.gguf", "-n", "4", "--shard-rows", "2",
                               "--metrics-addr", "off"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    # The command that wrote it ("in/", as typed then) goes on: exit 3, as
    # the folder still holds its failed row (docs/output.md).
    r = caption("in/")
    rows = went_on_with_hubble(r, out, old_parts)
    parts_then = [p.name for p in out.glob("part-*")]

    # Written before the KV cache types were in the fingerprint: other
    # types go on unchecked (docs/output.md), nothing to do.
    r = caption("in/", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
    assert r.returncode == 3 and "5 inputs were already done" in r.stderr, r.stderr[-3000:]
    assert sorted(p.name for p in out.glob("part-*")) == sorted(parts_then), "a part more"

    # A change is refused naming it alone: not the keys that sluice did
    # not write (kv_cache_types, compared with today's form).
    r = caption("in/", "--prompt", "Another prompt.")
    assert r.returncode == 2, r.stderr[-3000:]
    assert ("output folder 'out' holds rows made with other settings (prompt changed since): "
            "run the earlier command to resume it") in r.stderr, r.stderr[-3000:]
    r = caption("in")  # paths were kept as typed then: another spelling is another job there
    assert r.returncode == 2 and "(inputs changed since)" in r.stderr, r.stderr[-3000:]

    # --retry-failed over a fixed input: exit 0, the other row of its part
    # kept byte for byte.
    shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "in" / "broken.jpg")
    r = caption("in/", "--retry-failed")
    assert r.returncode == 0, r.stderr[-3000:]
    after = lines_by_id(out)
    assert sorted(after) == sorted(rows) and all(len(v) == 1 for v in after.values()), after
    assert json.loads(after["broken.jpg"][0])["error"] is None
    assert {k: v for k, v in after.items() if k != "broken.jpg"} == \
        {k: v for k, v in rows.items() if k != "broken.jpg"}
    # The fingerprint stays as that sluice wrote it: it can still resume the folder.
    assert fingerprint(out) == old_fp


def test_a_folder_begun_with_an_empty_system_and_template_resumes_without_them(sluice,
                                                                               tmp_path):
    """4ff1f38 took --system '' and --chat-template '' (kept as "" in the
    fingerprint) for what leaving them out means now (no system message,
    the model's template); both are refused now, and leaving them out was
    "system_prompt, chat_template changed since": no command could resume
    such a folder (doc22's finding). Now leaving them out goes on; a real
    change is still refused."""
    out = old_folder(tmp_path, "old-4ff1f38-empty-system")
    old_fp = fingerprint(out)
    assert '\nsystem_prompt\t""\n' in old_fp and '\nchat_template\t""\n' in old_fp, old_fp
    old_parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")

    def caption(*args):
        return subprocess.run([str(sluice.binary), "caption", "in/", "-o", "out", "--model",
                               "models/tiny/model.gguf", "--mmproj", "models/tiny/mmproj.gguf",
                               "-n", "4", "--shard-rows", "2", "--metrics-addr", "off", *args],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    r = caption("--system", "")
    assert r.returncode == 2 and "--system" in r.stderr, r.stderr[-3000:]
    went_on_with_hubble(caption(), out, old_parts)
    assert fingerprint(out) == old_fp  # as that sluice wrote it
    r = caption("--system", "Be brief.")
    assert r.returncode == 2, r.stderr[-3000:]
    # only what the user changed: the template left out is what '' meant
    assert "(system_prompt changed since)" in r.stderr, r.stderr[-3000:]
    r = caption("--chat-template", "chatml")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "(chat_template changed since)" in r.stderr, r.stderr[-3000:]


def test_a_job_of_sluice_4748157_with_a_stage_resumes(sluice, tmp_path):
    out = old_folder(tmp_path, "old-4748157-job")
    old_fp = fingerprint(out)
    old_parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")

    def run(*args):
        return subprocess.run([str(sluice.binary), "run", "job.yaml", *args],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    # Written before the stages were in the fingerprint: the job goes on.
    r = run()
    assert r.returncode == 3, r.stderr[-3000:]
    assert "resuming: 4 inputs were already done by an earlier run" in r.stderr, r.stderr[-3000:]
    rows = lines_by_id(out)
    assert sorted(rows) == sorted(IMAGES + ("broken.jpg", "hubble.jpg"))
    assert all(len(v) == 1 for v in rows.values()), rows
    new = json.loads(rows["hubble.jpg"][0])
    assert new["answer_chars"] == len(new["caption"].encode())  # the stage's column: Lua's #
    assert {p: (out / p).read_bytes() for p in old_parts} == old_parts

    r = run("--prompt", "Another prompt.")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "output folder 'out' holds rows made with other settings (prompt changed since)" \
        in r.stderr, r.stderr[-3000:]
    assert fingerprint(out) == old_fp


def test_an_openai_folder_of_sluice_4ff1f38_resumes_and_then_checks_the_model_served(sluice, tmp_path):
    from openai_helpers import FakeServer, completion
    out = old_folder(tmp_path, "old-4ff1f38-openai")
    old_fp = fingerprint(out)
    old_parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")

    def caption(url, *args):
        return subprocess.run([str(sluice.binary), "caption", "in", "-o", "out", "--engine", "openai",
                               "--endpoint", url, "-n", "4", "--shard-rows", "2",
                               "--metrics-addr", "off", *args],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    # Its fingerprint holds served_model (null: found from the fleet); it is
    # compared as written and the model found is recorded beside it.
    with FakeServer(lambda h, n, body: completion(h)) as fake:
        r = caption(fake.url)
        assert r.returncode == 3, r.stderr[-3000:]
        assert "resuming: 4 inputs were already done by an earlier run" in r.stderr, r.stderr[-3000:]
        r2 = caption(fake.url, "--prompt", "Another prompt.")
    rows = lines_by_id(out)
    assert sorted(rows) == sorted(IMAGES + ("broken.jpg", "hubble.jpg"))
    assert all(len(v) == 1 for v in rows.values()), rows
    assert json.loads(rows["hubble.jpg"][0])["caption"] == "a fake caption"
    assert {p: (out / p).read_bytes() for p in old_parts} == old_parts
    assert r2.returncode == 2 and "(prompt changed since)" in r2.stderr, r2.stderr[-3000:]

    # A fleet now serving another model is refused: the first run's was
    # recorded by the resume above.
    with FakeServer(lambda h, n, body: completion(h), models=("other",)) as fake:
        r = caption(fake.url)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "'fake'" in r.stderr and "'other'" in r.stderr, r.stderr[-3000:]
    assert fingerprint(out) == old_fp


def test_an_s3_output_of_sluice_4ff1f38_resumes_and_then_names_its_output(sluice, tmp_path):
    from s3_store import moto_store
    state = old_folder(tmp_path, "old-4ff1f38-s3", into="state")
    old_fp = fingerprint(state)
    old_parts = {}
    with moto_store() as (env, client):
        client.create_bucket(Bucket="compat")
        for part in sorted(state.glob("part-*")):  # the objects that run uploaded
            old_parts[part.name] = part.read_bytes()
            client.put_object(Bucket="compat", Key=f"fx4/{part.name}", Body=old_parts[part.name])
            part.unlink()
        shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")

        def caption(output):
            return subprocess.run([str(sluice.binary), "caption", "in", "-o", output,
                                   "--state-dir", "state", "--model", "models/tiny/model.gguf",
                                   "--mmproj", "models/tiny/mmproj.gguf", "-n", "4",
                                   "--shard-rows", "2", "--metrics-addr", "off"],
                                  capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)

        r = caption("s3://compat/fx4")
        assert r.returncode == 3, r.stderr[-3000:]
        assert "resuming: 4 inputs were already done by an earlier run" in r.stderr, r.stderr[-3000:]
        objects = {o["Key"]: client.get_object(Bucket="compat", Key=o["Key"])["Body"].read()
                   for o in client.list_objects_v2(Bucket="compat", Prefix="fx4/part-")["Contents"]}
        # The ledger now names its output: another output given this state
        # folder is refused (exit 2) and changes nothing.
        r = caption("s3://compat/other")
        assert r.returncode == 2, r.stderr[-3000:]
        assert ("state folder 'state' holds the resume ledger of output 's3://compat/fx4', not of "
                "'s3://compat/other'") in r.stderr, r.stderr[-3000:]
        assert "Contents" not in client.list_objects_v2(Bucket="compat", Prefix="other/")
    assert {k[len("fx4/"):]: v for k, v in objects.items() if k[len("fx4/"):] in old_parts} == old_parts
    rows = {}
    for body in objects.values():
        for line in body.decode().splitlines():
            rows.setdefault(json.loads(line)["id"], []).append(line)
    assert sorted(rows) == sorted(IMAGES + ("broken.jpg", "hubble.jpg"))
    assert all(len(v) == 1 for v in rows.values()), rows
    assert fingerprint(state) == old_fp


def test_openai_samples_of_sluice_4ff1f38_are_told_to_go_on_with_split_samples(sluice, tmp_path):
    """Before 2026-12-02 the openai engine drew --samples N with a request
    per answer; now one request with "n" unless --split-samples, and the
    two draw other answers, so the same command is refused: it must say
    which flag resumes the folder, not only 'run the earlier command'."""
    from openai_helpers import FakeServer, completion
    out = old_folder(tmp_path, "old-4ff1f38-openai-samples")
    old_fp = fingerprint(out)
    old_parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    shutil.copy(SAMPLES / "hubble.jpg", tmp_path / "in" / "hubble.jpg")

    def caption(url, *args, output="out"):
        return subprocess.run([str(sluice.binary), "caption", "in", "-o", output, "--engine", "openai",
                               "--endpoint", url, "-n", "4", "--samples", "2", "--temperature", "0.8",
                               "--shard-rows", "2", "--metrics-addr", "off", *args],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    with FakeServer(lambda h, n, body: completion(h)) as fake:
        r = caption(fake.url)
        assert r.returncode == 2, r.stderr[-3000:]
        assert ("(samples_drawn_by changed since): run the earlier command to resume it, choose "
                "another -o, or pass --overwrite to start over (the earlier run drew each answer "
                "with a request of its own, as every sluice before 2026-12-02 did: resume it with "
                "--split-samples (openai.split_samples))") in r.stderr, r.stderr[-3000:]
        assert fake.log == []
        r = caption(fake.url, "--split-samples")
        assert r.returncode == 3, r.stderr[-3000:]
        assert "resuming: 4 inputs were already done by an earlier run" in r.stderr, r.stderr[-3000:]
        assert len(fake.log) == 2  # hubble.jpg's two answers, a request each
        # A folder of today drawn with "n" (each row fails here: the fake
        # answers one choice) resumed with --split-samples: told the reverse.
        caption(fake.url, output="today")
        r = caption(fake.url, "--split-samples", output="today")
    assert r.returncode == 2, r.stderr[-3000:]
    assert ("(the earlier run drew a row's answers with one request with \"n\": resume it without "
            "--split-samples)") in r.stderr, r.stderr[-3000:]
    rows = lines_by_id(out)
    assert sorted(rows) == sorted(IMAGES + ("broken.jpg", "hubble.jpg"))
    assert all(len(v) == 2 for v in rows.values()), rows  # two answers an input, none more
    assert {p: (out / p).read_bytes() for p in old_parts} == old_parts
    assert fingerprint(out) == old_fp


def test_an_openai_folder_of_sluice_4ff1f38_started_over_is_a_folder_of_today(sluice, tmp_path):
    """A ledger whose fingerprint holds served_model (an openai folder of
    4ff1f38) but no committed part takes the new settings when resumed
    with other ones (sl_ledger_bind). It stored them in that older form,
    without fingerprint_form: the folder, written wholly today, was then
    taken for an older sluice's, and a stage added on its next resume was
    taken (exit 0), as compat21's F2 did before fingerprint_form. Now it
    stores today's fingerprint, and the stage is refused as for any folder
    of today (exit 2, stages changed since)."""
    out = old_folder(tmp_path, "old-4ff1f38-openai")
    for f in out.glob("part-*"):
        f.unlink()
    with sqlite3.connect(out / "_sluice_ledger.sqlite") as db:  # as a run that failed to start
        db.execute("DELETE FROM parts")
        db.execute("DELETE FROM rows")
    db.close()
    (tmp_path / "in" / "broken.jpg").unlink()
    (tmp_path / "keep.lua").write_text("function process(row) return row end\n")

    def caption(*args):
        return subprocess.run([str(sluice.binary), "caption", "in", "-o", "out", "--engine",
                               "openai", "--endpoint", "http://127.0.0.1:9", "-n", "4",
                               "--dry-run", "--metrics-addr", "off", *args],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)

    r = caption()
    assert r.returncode == 0, r.stderr
    assert "served_model" not in fingerprint(out)
    assert "\nfingerprint_form\t" in fingerprint(out), fingerprint(out)
    r = caption("--stage", "keep.lua")
    assert r.returncode == 2, r.stderr
    assert "(stages changed since)" in r.stderr, r.stderr
