"""Every timed wait in src/ measures its deadline on CLOCK_MONOTONIC
(core/clock.h), so a step of the wall clock (an NTP step, a VM resumed)
neither stalls nor cuts it. Checked on the source, since a clock step
cannot be made in a test:

- each pthread_cond_timedwait() waits on a condition variable that its
  file makes with sl_cond_init_monotonic(), and never with
  pthread_cond_init() (whose default clock is CLOCK_REALTIME);
- no wait whose deadline POSIX fixes on CLOCK_REALTIME (sem_timedwait,
  pthread_mutex_timedlock, C11 cnd_timedwait, ...);
- the clock of a condition variable is set in core/clock.c alone.

Usage: check_timed_waits.py [SRC_DIR] (default: src/ beside tests/).
Exit 0: all held; 1: each breach printed as FILE:LINE: why."""
import re
import sys

from source_check import c_files, report, src_dir, strip_comments

SRC = src_dir(__file__)

REALTIME_WAITS = ["sem_timedwait", "sem_clockwait", "pthread_mutex_timedlock",
                  "pthread_rwlock_timedrdlock", "pthread_rwlock_timedwrlock",
                  "pthread_timedjoin_np", "cnd_timedwait", "mtx_timedlock"]


def cv_name(arg: str) -> str:
    """The member or variable a `&expr` names: &e->done_cv -> done_cv."""
    return re.split(r"->|\.", arg.strip().lstrip("&").strip())[-1].strip()


def main() -> int:
    breaches = []
    files = c_files(SRC)
    for path in files:
        text = strip_comments(path.read_text(errors="replace"))
        line = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
        where = lambda pos: f"{path.relative_to(SRC.parent)}:{line(pos)}"  # noqa: E731
        monotonic = {cv_name(m.group(1))
                     for m in re.finditer(r"\bsl_cond_init_monotonic\s*\(([^)]*)\)", text)}
        default = {cv_name(m.group(1)): m.start()
                   for m in re.finditer(r"\bpthread_cond_init\s*\(([^,]*),", text)}
        for m in re.finditer(r"\bpthread_cond_timedwait\s*\(([^,]*),", text):
            name = cv_name(m.group(1))
            if name not in monotonic:
                breaches.append(f"{where(m.start())}: pthread_cond_timedwait on '{name}', "
                                "which this file does not make with sl_cond_init_monotonic()")
            if name in default and path.name != "clock.c":
                breaches.append(f"{where(default[name])}: '{name}' is waited on with a deadline "
                                "but made with pthread_cond_init() (CLOCK_REALTIME): use "
                                "sl_cond_init_monotonic()")
        for fn in REALTIME_WAITS:
            for m in re.finditer(rf"\b{fn}\s*\(", text):
                breaches.append(f"{where(m.start())}: {fn}() measures its deadline on "
                                "CLOCK_REALTIME: wait on a condition variable made with "
                                "sl_cond_init_monotonic()")
        if path.name != "clock.c":
            for m in re.finditer(r"\bpthread_condattr_setclock\s*\(", text):
                breaches.append(f"{where(m.start())}: a condition variable's clock is set in "
                                "core/clock.c (sl_cond_init_monotonic()) alone")
    return report(SRC, files, breaches)


if __name__ == "__main__":
    sys.exit(main())
