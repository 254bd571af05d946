"""Every file descriptor src/ opens is close-on-exec, so a child that
another thread starts meanwhile (a Lua stage's os.execute or io.popen, a C
plugin's helper) inherits none of ours: a part file being uploaded, the
ledger's lock, a /proc file a scrape reads. Checked on the source, since
the race with a fork cannot be made at will (test_process checks the /proc
opens of a scrape as they happen):

- each fopen()/freopen() whose mode is a string literal has 'e' in it
  (glibc's O_CLOEXEC); fdopen() takes the flag of the descriptor it is
  given, whose open() is checked;
- each open()/openat() names O_CLOEXEC in its flags;
- each socket() names SOCK_CLOEXEC;
- no dup() (dup2/dup3 onto a standard stream is fine: that is the point),
  pipe(), mkstemp() or tmpfile(), which cannot ask for it: use
  fcntl(F_DUPFD_CLOEXEC), pipe2(O_CLOEXEC), mkostemp(O_CLOEXEC), or a file
  of ours opened with O_CLOEXEC.

A call may be exempt with a comment `cloexec: WHY` on its line.
Usage: check_cloexec.py [SRC_DIR] (default: src/ beside tests/).
Exit 0: all held; 1: each breach printed as FILE:LINE: why."""
import re
import sys

from source_check import c_files, report, src_dir, strip_comments

SRC = src_dir(__file__)


def call_args(text: str, start: int) -> str:
    """The text between a call's parentheses (start: the '(')."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return text[start + 1:]


def main() -> int:
    breaches = []
    files = c_files(SRC)
    for path in files:
        raw = path.read_text(errors="replace")
        raw_lines = raw.splitlines()
        text = strip_comments(raw)
        line = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
        where = lambda pos: f"{path.relative_to(SRC.parent)}:{line(pos)}"  # noqa: E731
        exempt = lambda pos: "cloexec:" in raw_lines[line(pos) - 1]  # noqa: E731
        for m in re.finditer(r"(?<![\w.>])(fopen|freopen)\s*\(", text):
            args = call_args(text, m.end() - 1)
            modes = re.findall(r'"([^"]*)"', args)
            mode = modes[-1] if modes else None
            if mode is not None and "e" not in mode and not exempt(m.start()):
                breaches.append(f"{where(m.start())}: {m.group(1)}(..., \"{mode}\") is not "
                                f"close-on-exec: add 'e' to the mode")
        for m in re.finditer(r"(?<![\w.>])(open|openat)\s*\(", text):
            args = call_args(text, m.end() - 1)
            if "O_" in args and "O_CLOEXEC" not in args and not exempt(m.start()):
                breaches.append(f"{where(m.start())}: {m.group(1)}() without O_CLOEXEC")
        for m in re.finditer(r"(?<![\w.>])socket\s*\(", text):
            args = call_args(text, m.end() - 1)
            if "SOCK_CLOEXEC" not in args and not exempt(m.start()):
                breaches.append(f"{where(m.start())}: socket() without SOCK_CLOEXEC")
        for fn, use in (("dup", "fcntl(fd, F_DUPFD_CLOEXEC, 0)"), ("pipe", "pipe2(fds, O_CLOEXEC)"),
                        ("mkstemp", "mkostemp(template, O_CLOEXEC)"),
                        ("tmpfile", "a file opened with O_CLOEXEC")):
            for m in re.finditer(rf"(?<![\w.>]){fn}\s*\(", text):
                if not exempt(m.start()):
                    breaches.append(f"{where(m.start())}: {fn}() cannot be close-on-exec: "
                                    f"use {use}")
    return report(SRC, files, breaches)


if __name__ == "__main__":
    sys.exit(main())
