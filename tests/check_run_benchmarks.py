#!/usr/bin/env python3
"""bench/run_benchmarks.py against tests/fake_benchmark.py: a fault, a crash and a hang cost
only the benchmark that caused them; every other one is measured, in the groups' order."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "..", "bench", "run_benchmarks.py")
FAKE = os.path.join(HERE, "fake_benchmark.py")
failures = []


def run(spec, groups=(), budget=60, stall=30):
    with tempfile.TemporaryDirectory() as tmp:
        out, log = os.path.join(tmp, "out.json"), os.path.join(tmp, "processes.log")
        env = dict(os.environ, FAKE_BENCH_SPEC=spec, FAKE_BENCH_LOG=log)
        cmd = [sys.executable, RUNNER, FAKE, "--out", out, "--budget", str(budget),
               "--stall", str(stall)]
        for g in groups:
            cmd += ["--group", g]
        subprocess.run(cmd + ["--", "--benchmark_min_time=0.1"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        with open(out) as f:
            records = json.load(f)["benchmarks"]
        with open(log) as f:
            processes = [line.split() for line in f]
    return [(r["name"], r.get("error_message", "ok")) for r in records], processes


def expect(what, got, want):
    if got != want:
        failures.append(f"{what}:\n  got  {got}\n  want {want}")


# Nothing wrong: one process per group, every benchmark, the groups' order (a name once).
got, processes = run("a=ok,b=ok,c=ok,d=ok", groups=["c", "a|c", "."])
expect("healthy: order", got, [("c", "ok"), ("a", "ok"), ("b", "ok"), ("d", "ok")])
expect("healthy: processes", processes, [["c"], ["a"], ["b", "d"]])

# A fault breaks its process: it and the erring benchmarks after it run again in a fresh one,
# where the first one's result stands; their own errors ("no algorithm") stay theirs and the
# healthy ones are measured.
ILLEGAL = "an illegal memory access was encountered"
got, processes = run("a=ok,b=fault,c=ok,d=bad,e=ok")
expect("fault: results", got,
       [("a", "ok"), ("b", ILLEGAL), ("c", "ok"), ("d", "no algorithm"), ("e", "ok")])
expect("fault: processes", processes,
       [["a", "b", "c", "d", "e"], ["b", "c", "d", "e"], ["c", "d", "e"], ["d"]])

# A fault that surfaces late, in the next benchmark: that one is run again, and measured.
got, processes = run("a=late,b=ok,c=ok")
expect("late fault: results", got, [("a", "ok"), ("b", "ok"), ("c", "ok")])
expect("late fault: processes", processes, [["a", "b", "c"], ["b", "c"]])

# A crash loses its process's JSON: each benchmark again alone, so the culprit is named.
got, processes = run("a=ok,b=crash,c=ok")
expect("crash: results", got,
       [("a", "ok"), ("b", "its process ended without a result: exit status 134"), ("c", "ok")])
expect("crash: processes", len(processes), 4)

# A hang: killed after the stall time, then each alone; the hung one is named.
got, processes = run("a=ok,b=hang,c=ok", stall=2)
expect("hang: results", got,
       [("a", "ok"), ("b", "its process ended without a result: no output for 2 s"), ("c", "ok")])

# The budget: what it leaves out says so.
got, _ = run("a=hang,b=ok", budget=3, stall=30)
expect("budget: results", got,
       [("a", "not measured: the time budget was spent while its process ran"),
        ("b", "not measured: the time budget was spent while its process ran")])

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("run_benchmarks: fault, crash, hang and budget cases as expected")
