"""sluice over data and peers it cannot trust, on a machine it shares
(docs/security.md): what others may put in the output folder, what the
data's ids and answers may hold when they reach a file name or a page,
and what a job file written by someone else may make it do. The engine is
a FakeServer (no model), so each run takes a second or so."""
import json
import subprocess

from conftest import sample_images
from openai_helpers import FakeServer, completion

HOSTILE_CAPTION = ('</div></figcaption><script>alert("caption")</script>'
                   '<img src=x onerror="alert(1)"> & \'q\'')
HOSTILE_IDS = ['"><script>alert("id")</script>', "<img src=x onerror=alert(2)>",
               "../../escape/x", "/etc/passwd", "a\nb\x1b[31m", "..", "."]


def caption(sluice, inputs, out, engine_url, *extra, timeout=120, env=None):
    return subprocess.run(
        [str(sluice.binary), "caption", str(inputs), "-o", str(out), "--engine", "openai",
         "--endpoint", engine_url, "--metrics-addr", "off", *map(str, extra)],
        capture_output=True, text=True, timeout=timeout, env=env)


def hostile_manifest(path):
    images = sample_images()
    rows = [{"image_id": k, "image": str(images[i % len(images)])}
            for i, k in enumerate(HOSTILE_IDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def files_under(root):
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_temporaries_in_the_output_folder_are_never_written_through_a_symlink(sluice, tmp_path):
    """The report's, the metrics' and the parts' temporaries have names
    known in advance (._summary.json.tmp, ._report.html.tmp,
    _metrics.prom.tmp, .part-N.EXT.tmp-PID): another user who may write in
    a shared output folder put a symlink there under such a name, and the
    run truncated the file it named and wrote the report into it (the
    user's ~/.bashrc, say). The link is replaced by a file of the run's
    own; the files the links named keep their bytes."""
    out = tmp_path / "shared-out"
    out.mkdir()
    victims = {}
    for name in ("._summary.json.tmp", "._report.html.tmp", "_metrics.prom.tmp"):
        victim = tmp_path / f"victim-{name.strip('._')}"
        victim.write_text(f"the user's own {name}\n")
        (out / name).symlink_to(victim)
        victims[victim] = victim.read_bytes()
    # What the run removes as its own (a killed run's temporaries, the
    # names an older sluice gave the report) goes by unlink: a link there
    # is removed, never the file it names, even one holding what an older
    # sluice's summary held.
    removed = {".part-00000.jsonl.tmp-1": "rows\n", ".errors-00000.jsonl.tmp-1": "errors\n",
               "summary.json": '{"report": "report.html"}\n'}
    for name, text in removed.items():
        victim = tmp_path / f"victim-{name.strip('.')}"
        victim.write_text(text)
        (out / name).symlink_to(victim)
        victims[victim] = victim.read_bytes()
    with FakeServer(lambda h, n, body: completion(h)) as engine:
        r = caption(sluice, hostile_manifest(tmp_path / "m.jsonl"), out, engine.url,
                    "--id-column", "image_id")
    assert r.returncode == 0, r.stderr
    for victim, before in victims.items():
        assert victim.read_bytes() == before, victim
    assert not any((out / name).is_symlink() for name in removed)
    for name in ("_summary.json", "_report.html", "_metrics.prom"):
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    assert json.loads((out / "_summary.json").read_text())["rows"]["ok"] == len(HOSTILE_IDS)
