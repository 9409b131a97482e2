#!/usr/bin/env python3
"""train_mnist stopped by Ctrl-C (SIGINT) and by SIGTERM: it stops at the next step with exit
status 128 + the signal, says which checkpoint to --resume from, leaves no temp file, and the
resume from that checkpoint runs to the end.

  check_interrupt.py TRAIN_MNIST OUT_DIR
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

TRAIN, OUT = sys.argv[1], sys.argv[2]
SMALL = ["--hidden", "32", "--latent", "4", "--threads", "1"]
failures = []


def expect(condition, what):
    if not condition:
        failures.append(what)


def stop_with(sig, out):
    shutil.rmtree(out, ignore_errors=True)
    checkpoint = os.path.join(out, "checkpoint.safetensors")
    with open(out + ".stderr", "w") as err:
        proc = subprocess.Popen([TRAIN, "--epochs", "500", "--out", out] + SMALL,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not os.path.exists(checkpoint) and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"no checkpoint in {out} after 300 s")
            time.sleep(0.05)
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit(f"{signal.Signals(sig).name}: still running 120 s later")
    said = open(out + ".stderr").read()
    name = signal.Signals(sig).name
    expect(rc == 128 + sig, f"{name}: exit status {rc}, want {128 + sig}; stderr:\n{said[-2000:]}")
    expect("stopping after the current step" in said, f"{name}: no notice on stderr")
    expect("train_mnist: interrupted: step " in said, f"{name}: no 'interrupted' line:\n{said[-2000:]}")
    expect(f"continue with --resume {checkpoint}" in said, f"{name}: no --resume advice")
    left = sorted(os.listdir(out))
    expect(left == ["checkpoint.safetensors", "metrics.csv", "metrics.jsonl"],
           f"{name}: {out} holds {left}")
    kept = re.search(r"the last good checkpoint .* \(epoch (\d+)\)", said)
    expect(kept is not None, f"{name}: the kept epoch is not named")
    return checkpoint, int(kept.group(1)) if kept else 0


checkpoint, epoch = stop_with(signal.SIGINT, OUT + "-int")
if epoch:
    resumed = subprocess.run([TRAIN, "--resume", checkpoint, "--epochs", str(epoch + 1), "--quiet",
                              "--out", OUT + "-int"] + SMALL, capture_output=True, text=True,
                             timeout=600)
    expect(resumed.returncode == 0, f"the resume failed: {resumed.stderr}")
    expect("test error (distance classifier)" in resumed.stdout, "the resume printed no test error")
stop_with(signal.SIGTERM, OUT + "-term")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"SIGINT and SIGTERM stop train_mnist cleanly; the resume from epoch {epoch} ran")
