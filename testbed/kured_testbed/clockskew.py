"""A wrong wall clock on one simulated node, for the chaos run's clock jumps.

kured reads the wall clock for lock TTLs, Lease renewals and the age of a holder's
NotReady condition, so a node whose clock jumps must be part of the chaos. The machine's
clock is shared and libfaketime is not installed, so this is a tiny LD_PRELOAD library,
compiled on the spot with the system's C compiler: every daemon is started with it, and it
shifts CLOCK_REALTIME (``clock_gettime`` and ``time``, which CPython and OpenSSL use) by
the number of seconds in its node's ``STATE/nodes/<node>/clock-offset`` file, re-read once
a second, so writing the file is a clock jump on that node alone. Monotonic clocks are left
alone, as a real clock jump leaves them. Nothing in kured knows about it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kured_testbed.state import NodeDir, atomic_write

OFFSET_FILE = "clock-offset"

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*clock_fn)(clockid_t, struct timespec *);
static clock_fn real_clock_gettime;
static long long offset_ns;
static time_t checked = -1;

static void refresh(void) {
    struct timespec now;
    if (!real_clock_gettime)
        real_clock_gettime = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    real_clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    if (now.tv_sec == checked)
        return;
    checked = now.tv_sec;
    double seconds = 0;
    const char *dir = getenv("KURED_SANDBOX_NODE_DIR");
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/" "clock-offset", dir);
        FILE *file = fopen(path, "r");
        if (file) {
            if (fscanf(file, "%lf", &seconds) != 1)
                seconds = 0;
            fclose(file);
        }
    }
    offset_ns = (long long)(seconds * 1e9);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    refresh();
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ns;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
"""


def build(directory: Path) -> Path | None:
    """Compile the library into directory; None when there is no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    source, library = directory / "clockskew.c", directory / "libclockskew.so"
    source.write_text(_SOURCE)
    argv = [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return library if result.returncode == 0 else None


def jump(node: NodeDir, seconds: float) -> None:
    """Set the node's clock `seconds` away from the machine's (0: back to the right time)."""
    atomic_write(node.path / OFFSET_FILE, f"{seconds}\n")
