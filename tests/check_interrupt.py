#!/usr/bin/env python3
"""train_mnist stopped by Ctrl-C (SIGINT), by SIGTERM and by SIGHUP (the terminal closed): it
stops at the next step with exit status 128 + the signal, says which checkpoint to --resume
from, leaves no temp file, and the resume from that checkpoint runs to the end. A Ctrl-C after
the last step stops before the test evaluation (exit 130), saying the error was not computed.

  check_interrupt.py TRAIN_MNIST OUT_DIR

With --reproduce, reproduce instead: stopped by Ctrl-C in EquiVAE's epochs and in the
classifiers' (exit 130, --reuse advice, the EquiVAE checkpoint kept), and killed outright (a
runs.csv that --reuse reads is there); each continued with --reuse from the checkpoint, with
the whole training time in runs.csv's seconds.

  check_interrupt.py --reproduce REPRODUCE OUT_DIR
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

TRAIN, OUT = sys.argv[1], sys.argv[2]
REPRODUCE = sys.argv[2] if TRAIN == "--reproduce" else None
if REPRODUCE:
    OUT = sys.argv[3]
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
    expect("train_mnist: interrupted: epoch " in said, f"{name}: no 'interrupted' line:\n{said[-2000:]}")
    expect(f"continue by running this command again with --resume {checkpoint} added" in said,
           f"{name}: no --resume advice")
    left = sorted(os.listdir(out))
    expect(left == ["checkpoint.safetensors", "metrics.csv", "metrics.jsonl"],
           f"{name}: {out} holds {left}")
    kept = re.search(r"the last good checkpoint .* \(epoch (\d+)\)", said)
    expect(kept is not None, f"{name}: the kept epoch is not named")
    return checkpoint, int(kept.group(1)) if kept else 0


# ---- reproduce (--reproduce)
REPRODUCE_SMALL = ["--quick", "--seeds", "1", "--hidden", "32", "--latent", "4", "--threads", "1",
                   "--device", "cpu"]


def csv_rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split(",") for line in f]


def reproduce(out, args, sig=None, metrics=None, epochs=0):
    """Runs reproduce into `out`; with `sig`, sends it once the file `metrics` holds `epochs`
    epoch rows. Returns the exit status and stderr."""
    with open(out + ".stderr", "w") as err:
        proc = subprocess.Popen([REPRODUCE, "--out", out] + REPRODUCE_SMALL + args,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while sig is not None and proc.poll() is None:
            if os.path.exists(metrics) and len(csv_rows(metrics)) > epochs:
                proc.send_signal(sig)
                break
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"no epoch {epochs} in {metrics} after 300 s")
            time.sleep(0.02)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "still running 120 s after the signal"
    return rc, open(out + ".stderr").read()


def continued(out, args, run, what):
    """The same command with --reuse OUT/runs.csv: the run continues from its checkpoint, its
    row is written, the checkpoint deleted. Returns the row and the epoch continued from."""
    rc, said = reproduce(out, args + ["--reuse", f"{out}/runs.csv"])
    expect(rc == 0, f"{what}: the --reuse run failed ({rc}):\n{said[-2000:]}")
    took = re.search(r"note: labels \d+ seed 1: EquiVAE continues from (\S+) after epoch (\d+) of", said)
    expect(took is not None and took.group(1) == f"{run}/checkpoint.safetensors",
           f"{what}: the --reuse run did not continue from the checkpoint:\n{said[-2000:]}")
    expect(not os.path.exists(f"{run}/checkpoint.safetensors"), f"{what}: checkpoint kept")
    rows = csv_rows(f"{out}/runs.csv")
    expect(len(rows) == 2, f"{what}: runs.csv after --reuse: {rows}")
    return rows[1] if len(rows) == 2 else None, int(took.group(2)) if took else 0


def classifiers_stopped():
    """Ctrl-C in the classifiers: exit 130, the EquiVAE checkpoint kept; --reuse trains only
    the classifiers, and the row is the uninterrupted run's."""
    out = OUT + "-classifiers"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + "-whole", ignore_errors=True)
    run = f"{out}/runs/table2-labels100-seed1"
    args = ["--labels", "100", "--epochs", "2", "--classifier-epochs", "3000"]
    rc, said = reproduce(out, args, signal.SIGINT, f"{run}/metrics.csv", 2)
    expect(rc == 130, f"classifiers: exit status {rc}, want 130:\n{said[-2000:]}")
    expect(re.search(r"reproduce: interrupted: labels 100 seed 1, (neural|benchmark) classifier "
                     r"epoch \d+ of 3000, step \d+ of \d+: stopped on request", said),
           f"classifiers: no 'interrupted' line:\n{said[-2000:]}")
    expect(f"--reuse {out}/runs.csv continues from there, training only the classifiers" in said,
           "classifiers: no --reuse advice")
    expect(os.path.exists(f"{run}/checkpoint.safetensors"),
           f"classifiers: the EquiVAE checkpoint is gone: {sorted(os.listdir(run))}")
    expect(len(csv_rows(f"{out}/runs.csv")) == 1, "classifiers: runs.csv should hold no run")
    row, epoch = continued(out, args, run, "classifiers")
    expect(epoch == 2, f"classifiers: continued from epoch {epoch}, want 2")
    expect(len(csv_rows(f"{run}/metrics.csv")) == 3, "classifiers: EquiVAE trained again")
    rc, said = reproduce(out + "-whole", args)
    whole = csv_rows(f"{out}-whole/runs.csv")[-1] if rc == 0 else None
    expect(row is not None and whole is not None and row[:8] == whole[:8],
           f"classifiers: continued {row}, uninterrupted {whole}")


def equivae_stopped():
    """Ctrl-C in EquiVAE's epochs: exit 130; --reuse continues, and the row's seconds hold every
    epoch's time (this session's and those the checkpoint holds)."""
    out = OUT + "-equivae"
    shutil.rmtree(out, ignore_errors=True)
    run = f"{out}/runs/table2-labels100-seed1"
    args = ["--labels", "100", "--epochs", "20"]
    rc, said = reproduce(out, args, signal.SIGINT, f"{run}/metrics.csv", 10)
    expect(rc == 130, f"equivae: exit status {rc}, want 130:\n{said[-2000:]}")
    expect(re.search(r"reproduce: interrupted: labels 100 seed 1, epoch \d+, step \d+ of \d+ "
                     r"\(step \d+ of the run\): stopped on request", said),
           f"equivae: no 'interrupted' line:\n{said}")
    expect(f"--reuse {out}/runs.csv continues from there" in said, "equivae: no --reuse advice")
    row, epoch = continued(out, args, run, "equivae")
    expect(epoch >= 9, f"equivae: continued from epoch {epoch}, want 9 or later")
    metrics = csv_rows(f"{run}/metrics.csv")
    columns = metrics[0]
    epochs_time = sum(float(m[columns.index(c)]) for m in metrics[1:]
                      for c in ("seconds", "validation_seconds", "checkpoint_seconds"))
    expect(len(metrics) == 21, f"equivae: metrics.csv holds {len(metrics) - 1} epochs, want 20")
    seconds = float(row[8]) if row else 0
    expect(seconds >= epochs_time,
           f"equivae: runs.csv's seconds {seconds} < the 20 epochs' {epochs_time:.3f} s")


def killed():
    """Killed outright in the first run's epochs: runs.csv already holds its header, so --reuse
    reads it and continues from the checkpoint."""
    out = OUT + "-killed"
    shutil.rmtree(out, ignore_errors=True)
    run = f"{out}/runs/table2-labels100-seed1"
    args = ["--labels", "100", "--epochs", "20"]
    rc, said = reproduce(out, args, signal.SIGKILL, f"{run}/metrics.csv", 3)
    expect(rc == -signal.SIGKILL, f"killed: exit status {rc}:\n{said[-2000:]}")
    rows = csv_rows(f"{out}/runs.csv") if os.path.exists(f"{out}/runs.csv") else []
    expect(rows[:1] == [["table", "labels", "seed", "epochs", "q_error", "distance_error",
                         "neural_error", "benchmark_error", "seconds", "settings_crc32"]],
           f"killed: runs.csv holds {rows}, want its header")
    _, epoch = continued(out, args, run, "killed")
    expect(epoch >= 2, f"killed: continued from epoch {epoch}, want 2 or later")


if REPRODUCE:
    classifiers_stopped()
    equivae_stopped()
    killed()
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("reproduce stops cleanly in EquiVAE's epochs and in the classifiers, and continues "
          "from its checkpoint, killed too")
    sys.exit(0)

checkpoint, epoch = stop_with(signal.SIGINT, OUT + "-int")
if epoch:
    resumed = subprocess.run([TRAIN, "--resume", checkpoint, "--epochs", str(epoch + 1), "--quiet",
                              "--out", OUT + "-int"] + SMALL, capture_output=True, text=True,
                             timeout=600)
    expect(resumed.returncode == 0, f"the resume failed: {resumed.stderr}")
    expect("test error (distance classifier)" in resumed.stdout, "the resume printed no test error")
stop_with(signal.SIGTERM, OUT + "-term")
stop_with(signal.SIGHUP, OUT + "-hup")


def stopped_before_the_test_error():
    """Ctrl-C once training is past its last step: no test error is computed, exit 130, and the
    message says so and how to get it. The run's stdout is a pipe filled beforehand, so that its
    one JSON line (written after the epoch's checkpoint starts) waits for the signal."""
    out = OUT + "-evaluation"
    shutil.rmtree(out, ignore_errors=True)
    checkpoint = os.path.join(out, "checkpoint.safetensors")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    filled = 0
    try:
        while True:
            filled += os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    with open(out + ".stderr", "w") as err:
        proc = subprocess.Popen([TRAIN, "--epochs", "1", "--out", out, "--log-json", "-"] + SMALL,
                                stdout=write_end, stderr=err)
        os.close(write_end)
        deadline = time.monotonic() + 300
        while not os.path.exists(checkpoint) and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"no checkpoint in {out} after 300 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        with os.fdopen(read_end, "rb") as pipe:
            printed = pipe.read()[filled:].decode()
        rc = proc.wait(timeout=120)
    said = open(out + ".stderr").read()
    expect(rc == 130, f"evaluation: exit status {rc}, want 130; stderr:\n{said[-2000:]}")
    expect("test error" not in printed + said.replace("the test error was not computed", ""),
           f"evaluation: a test error was printed after Ctrl-C:\n{printed}{said[-2000:]}")
    expect(f"train_mnist: interrupted: test evaluation: stopped on request; training finished "
           f"(epoch 1) and {checkpoint} is kept, but the test error was not computed: classify "
           f"--checkpoint {checkpoint} with this run's data flags computes it" in said,
           f"evaluation: no 'not computed' line:\n{said[-2000:]}")
    expect(os.path.exists(checkpoint), "evaluation: no checkpoint kept")


stopped_before_the_test_error()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"SIGINT, SIGTERM and SIGHUP stop train_mnist cleanly; the resume from epoch {epoch} ran; "
      "Ctrl-C after the last step skips the test evaluation, saying so")
