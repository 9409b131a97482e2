#!/usr/bin/env python3
"""A stand-in for a Google Benchmark binary, for check_run_benchmarks.py.

Its benchmarks and what each does come from FAKE_BENCH_SPEC, "name=behaviour,...":
  ok     reports a time;
  bad    errs on its own ("no algorithm"), leaving the process sound;
  fault  errs and leaves the process broken: it and every later one in the same process err
         with CUDA's "an illegal memory access was encountered";
  late   reports a time but leaves the process broken: every later one errs as above (a
         fault that surfaces at the next benchmark's first synchronisation);
  crash  ends the process at once, without its JSON;
  hang   sleeps far past any timeout.
Each process appends the names it was asked to run, one line, to FAKE_BENCH_LOG.
Understands --benchmark_list_tests, --benchmark_filter, --benchmark_out(_format) and ignores
the rest, as the real binary would ignore options it is not asked about here.
"""
import json
import os
import re
import sys
import time


def main():
    spec = [item.split("=") for item in os.environ["FAKE_BENCH_SPEC"].split(",")]
    regex, out, listing = ".", None, False
    for arg in sys.argv[1:]:
        if arg.startswith("--benchmark_filter="):
            regex = arg.split("=", 1)[1]
        elif arg.startswith("--benchmark_out="):
            out = arg.split("=", 1)[1]
        elif arg.startswith("--benchmark_list_tests"):
            listing = True
    chosen = [(n, b) for n, b in spec if re.search(regex, n)]
    if listing:
        print("\n".join(n for n, _ in chosen))
        return 0
    with open(os.environ["FAKE_BENCH_LOG"], "a") as log:
        log.write(" ".join(n for n, _ in chosen) + "\n")
    records, broken = [], False
    for name, behaviour in chosen:
        if behaviour == "crash":
            os._exit(134)
        if behaviour == "hang":
            time.sleep(3600)
        broken = broken or behaviour == "fault"
        record = {"name": name, "run_name": name, "run_type": "iteration", "iterations": 10,
                  "real_time": 1.5, "cpu_time": 1.5, "time_unit": "us"}
        if broken or behaviour == "bad":
            record.update(error_occurred=True, iterations=0,
                          error_message="an illegal memory access was encountered" if broken
                          else "no algorithm")
        records.append(record)
        broken = broken or behaviour == "late"
        print(name, "error" if record.get("error_occurred") else "ok", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump({"context": {"executable": "fake"}, "benchmarks": records}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
