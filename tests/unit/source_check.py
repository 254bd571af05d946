"""What the checks on src/'s text share (check_timed_waits.py,
check_cloexec.py): its C files, their comments blanked, the breaches
reported."""
import pathlib
import re
import sys


def src_dir(script: str) -> pathlib.Path:
    """argv[1], else src/ beside tests/."""
    return pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else \
        pathlib.Path(script).resolve().parents[2] / "src"


def c_files(src: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in src.rglob("*") if p.suffix in (".c", ".h"))


def strip_comments(text: str) -> str:
    """Comments blanked, lines kept (a line number stays a line number)."""
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def report(src: pathlib.Path, files: list, breaches: list[str]) -> int:
    """Prints each breach and a count; the exit status (1: none read, or breaches)."""
    if not files:
        print(f"no C files under {src}", file=sys.stderr)
        return 1
    for b in breaches:
        print(b)
    print(f"{len(files)} files, {len(breaches)} breach(es)")
    return 1 if breaches else 0
