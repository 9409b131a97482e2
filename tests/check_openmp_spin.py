#!/usr/bin/env python3
"""A tool runs with GOMP_SPINCOUNT=1000 (runtime/openmp_spin.h) unless the user set
OMP_WAIT_POLICY or GOMP_SPINCOUNT, whose value then stands: read from libgomp itself, which
prints the values it took when OMP_DISPLAY_ENV=verbose, once per image the process runs (the
tool's first one, with libgomp's default, then the one it runs itself again as).

usage: check_openmp_spin.py TOOL
"""
import os
import re
import subprocess
import sys


def spin_counts(tool, extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra, OMP_DISPLAY_ENV="verbose")
    done = subprocess.run([tool, "--help"], env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        sys.exit(f"FAIL: {tool} --help exited {done.returncode}: {done.stderr}")
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)


def main():
    tool = sys.argv[1]
    cases = [({}, ["300000", "1000"]), ({"GOMP_SPINCOUNT": "50000"}, ["50000"])]
    for extra, expected in cases:
        got = spin_counts(tool, extra)
        if got != expected:
            sys.exit(f"FAIL: with {extra or 'neither variable'} libgomp took GOMP_SPINCOUNT {got}, "
                     f"expected {expected}")
    got = spin_counts(tool, {"OMP_WAIT_POLICY": "active"})
    if len(got) != 1 or got[0] == "1000":
        sys.exit(f"FAIL: with OMP_WAIT_POLICY=active libgomp took GOMP_SPINCOUNT {got}, not its own")
    print("ok: GOMP_SPINCOUNT=1000 when unset; the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT kept")


if __name__ == "__main__":
    main()
