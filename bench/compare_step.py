#!/usr/bin/env python3
"""Puts the engine's training step beside the peers' in one Markdown table.

usage: compare_step.py ENGINE_BENCH.json PEERS.jsonl [--title TEXT] [--benchmark NAME]

ENGINE_BENCH.json: Google Benchmark JSON output of bench_train_step (BM_TrainStep, or the
benchmark --benchmark names: BM_SemiSupervisedStep for the semi-supervised peers);
PEERS.jsonl: one JSON line per peer run (bench/peers/run_peers.sh).
Ratios are peer time / engine time (> 1: the engine is faster).
"""
import argparse
import json


def engine_ms(path, benchmark):
    with open(path) as f:
        report = json.load(f)
    steps = [b for b in report["benchmarks"] if b["name"].startswith(benchmark)]
    # With repetitions, take the median aggregate; otherwise the single run.
    medians = [b for b in steps if b.get("aggregate_name") == "median"]
    for b in medians or steps:
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        return b["real_time"] * scale, report["context"]
    raise SystemExit(f"{path}: no {benchmark} result")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine")
    ap.add_argument("peers")
    ap.add_argument("--title", default="Training step, supervised MNIST, B = 160")
    ap.add_argument("--benchmark", default="BM_TrainStep")
    a = ap.parse_args()
    ms, context = engine_ms(a.engine, a.benchmark)
    peers = [json.loads(l) for l in open(a.peers) if l.strip().startswith("{")]
    print(f"### {a.title}\n")
    print(f"Machine: {context.get('num_cpus', '?')} CPUs at {context.get('mhz_per_cpu', '?')} MHz, "
          f"run {context.get('date', '?')}\n")
    print("| implementation | ms per step | examples/s | peer time / engine time |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| this engine | {ms:.2f} | {160 / ms * 1e3:,.0f} | 1.00 |")
    for p in peers:
        name = f"{p['peer']} {p['mode']}"
        t = p["ms_per_step_median"]
        print(f"| {name} ({p.get('framework', '')}) | {t:.2f} | {p['examples_per_s']:,.0f} | {t / ms:.2f} |")
    if peers:
        best = min(peers, key=lambda p: p["ms_per_step_median"])
        print(f"\nBest peer: {best['peer']} {best['mode']}; engine speed-up over it: "
              f"{best['ms_per_step_median'] / ms:.2f}x")


if __name__ == "__main__":
    main()
