#!/usr/bin/env python3
"""Runs a Google Benchmark binary so that one bad benchmark costs only itself.

On a GPU, a kernel that faults (an illegal address, say) leaves the process's CUDA context
unusable: every benchmark after it in the same process then fails too, and a session's one
GPU run would come back with nothing after the first fault. This runner runs the benchmarks
group after group (each in processes of its own: the first group is measured first, whatever
the binary's own order), in as few processes as it can:

  - one process for all that is pending; when a benchmark in it errs, it and the ones after
    it that erred as well run again in a fresh process, where the first one's result stands
    (an error may be an earlier benchmark's fault surfacing late);
  - when a process ends without its JSON (a crash, a timeout), each of its benchmarks runs
    in a process of its own, so that the culprit is named and the rest still measured;
  - a process silent for --stall seconds is taken for hung and killed (as above);
  - everything within --budget seconds; what the budget leaves out is recorded as such.

The merged JSON has Google Benchmark's layout ({"context": …, "benchmarks": [...]}) in the
groups' order; benchmarks that never ran carry error_occurred and the reason. Standard
library only: the GPU machine's python3 runs it.

  run_benchmarks.py BINARY --out FILE [--group REGEX]... [--budget S] [--stall S]
                    [--library-path P] [-- BINARY_ARGS...]
"""
import argparse
import json
import os
import re
import subprocess
import shutil
import sys
import tempfile
import threading
import time

# An error that says there is no device at all: every later benchmark would say the same.
NO_DEVICE = "no CUDA device"


def list_benchmarks(binary, regex):
    out = subprocess.run([binary, "--benchmark_list_tests=true", f"--benchmark_filter={regex}"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{binary} --benchmark_list_tests failed (rc={out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def exact_filter(names):
    return "|".join("^" + re.escape(n) + "$" for n in names)


def failed(name, why):
    return {"name": name, "run_name": name, "run_type": "iteration", "error_occurred": True,
            "error_message": why, "iterations": 0, "real_time": 0.0, "cpu_time": 0.0}


class Runner:
    def __init__(self, binary, extra, deadline, stall, log):
        self.binary, self.extra, self.deadline, self.log = binary, extra, deadline, log
        self.stall = stall
        self.context = None
        self.processes = 0
        self.ended = ""  # how the last process without a JSON ended

    def watch(self, process):
        """Echoes the process's output; kills it past the deadline or after `stall` seconds
        without a line. Returns its exit status, or why it was killed."""
        last = [time.monotonic()]

        def echo():
            for line in iter(process.stdout.readline, b""):
                last[0] = time.monotonic()
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        why = None
        while process.poll() is None:
            if self.left() <= 0:
                why = "the time budget was spent"
            elif time.monotonic() - last[0] > self.stall:
                why = f"no output for {self.stall:.0f} s"
            if why:
                self.log(f"run_benchmarks: killing the process: {why}")
                process.kill()
                process.wait()
                break
            time.sleep(0.2)
        reader.join(timeout=5)
        return why or process.returncode

    def left(self):
        return self.deadline - time.monotonic()

    def run_process(self, names):
        """Runs `names` in one process. Returns {name: [records]} or None without a JSON."""
        if self.left() < 1:
            self.ended = "the time budget was spent"
            return None
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [self.binary, f"--benchmark_filter={exact_filter(names)}",
               f"--benchmark_out={path}", "--benchmark_out_format=json"] + self.extra
        if shutil.which("stdbuf"):  # line by line through the pipe, so that silence means a stall
            cmd = ["stdbuf", "-oL", "-eL"] + cmd
        self.processes += 1
        self.log(f"run_benchmarks: process {self.processes}, {len(names)} benchmark(s), "
                 f"{self.left():.0f} s left")
        rc = self.watch(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
        finally:
            os.unlink(path)
        if data is None:
            self.ended = rc if isinstance(rc, str) else f"exit status {rc}"
            self.log(f"run_benchmarks: the process ended without its JSON ({self.ended})")
            return None
        if self.context is None:
            self.context = data.get("context")
        found = {}
        for record in data.get("benchmarks", []):
            found.setdefault(record.get("run_name", record["name"]), []).append(record)
        return found

    def run(self, names):
        """Runs `names`; returns {name: [records]} for every one of them."""
        results = {}
        pending = list(names)
        while pending:
            if self.left() < 1:
                for n in pending:
                    results[n] = [failed(n, "not run: the time budget was spent")]
                break
            found = self.run_process(pending)
            if found is None and self.left() < 1:
                for n in pending:
                    results[n] = [failed(n, "not measured: the time budget was spent while "
                                         "its process ran")]
                break
            if found is None:  # crash or hang: each on its own, to name the culprit
                if len(pending) == 1:
                    results[pending[0]] = [failed(pending[0], "its process ended without "
                                                  f"a result: {self.ended}")]
                else:
                    for n in pending:
                        results.update(self.run([n]))
                break
            # The process's first benchmark ran in a fresh context: its result stands. An
            # error after it may be an earlier benchmark's fault surfacing late (a kernel's
            # fault shows at the next synchronisation, which may be in the next benchmark):
            # the erring ones from the first error on run again in a fresh process.
            retry, first_error = [], None
            for i, n in enumerate(pending):
                records = found.get(n)
                if not records:
                    records = [failed(n, "not reported by its process")]
                erred = any(r.get("error_occurred") for r in records)
                if erred and first_error is None:
                    first_error = records[0].get("error_message", "error")
                if erred and i > 0 and NO_DEVICE not in first_error:
                    retry.append(n)
                    continue
                results[n] = records
            if retry:
                self.log(f"run_benchmarks: {len(retry)} benchmark(s) erred after "
                         f"'{first_error}': again in a fresh process")
            pending = retry
        return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--out", required=True, help="merged JSON results")
    parser.add_argument("--group", action="append", default=[],
                        help="a benchmark filter regex; groups run in the order given "
                             "(default: every benchmark)")
    parser.add_argument("--budget", type=float, default=600, help="seconds for all of it")
    parser.add_argument("--library-path",
                        help="LD_LIBRARY_PATH for the binary (python3 itself keeps its own)")
    parser.add_argument("--stall", type=float, default=120,
                        help="seconds without a line of output after which a process is "
                             "taken for hung and killed")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # the binary's own arguments
    args = parser.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.library_path is not None:
        os.environ["LD_LIBRARY_PATH"] = args.library_path  # inherited by the binary's processes
    runner = Runner(args.binary, extra, time.monotonic() + args.budget, args.stall, log)

    # A group's benchmarks run in processes of their own, after the earlier groups': a binary
    # runs what its filter selects in its own (registration) order, whatever the filter says.
    order, results = [], {}
    for regex in args.group or ["."]:
        names = [n for n in list_benchmarks(args.binary, regex) if n not in results]
        order += names
        results.update(runner.run(names))
    benchmarks = [r for n in order for r in results[n]]
    with open(args.out, "w") as f:
        json.dump({"context": runner.context or {}, "benchmarks": benchmarks}, f, indent=2)
    errors = sum(1 for n in order if any(r.get("error_occurred") for r in results[n]))
    log(f"run_benchmarks: {len(order)} benchmark(s) in {runner.processes} process(es), "
        f"{errors} with an error; results in {args.out}")
    return 0  # a benchmark's error is in its record, as the binary itself would report it


if __name__ == "__main__":
    sys.exit(main())
