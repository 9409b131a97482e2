#!/usr/bin/env python3
"""python/equivae_checkpoint.py against the engine: trains three small models (dense
supervised, dense semi-supervised, conv SVHN-format), loads each checkpoint in PyTorch, and
compares with what the engine's tools computed from the same checkpoint on the same images:
f_inv(x) and the mean of q(v | r_pooled, x) with `embed`'s r.npy and v.npy, q(y|x)'s argmax
with `classify --method classifier`. (The decoder and every gradient are held against the
engine in float64 by torch_check/check_step.py, which builds its networks with the same
module.) Then damaged files must raise ValueError naming the file.

usage: check_torch_checkpoint.py BIN_DIR TESTS_BIN_DIR SOURCE_DIR WORK_DIR
"""
import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import scipy.io
import torch

SOURCE = sys.argv[3]
sys.path.insert(0, os.path.join(SOURCE, "python"))
import equivae_checkpoint  # noqa: E402

BIN, TESTS_BIN, WORK = sys.argv[1], sys.argv[2], sys.argv[4]
MNIST = os.path.join(SOURCE, "data", "mnist10k-images-idx3-ubyte.gz")
failures = []


def tool(name, *args):
    quiet = ["--quiet"] if name.startswith("train_") else []
    command = [os.path.join(BIN, name), *quiet, "--threads", "1", "--device", "cpu", *args]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{name} {' '.join(args)} failed ({run.returncode}): {run.stderr}")
    return run


def expect(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    if not condition:
        failures.append(message)


def close(name, torch_value, engine_value):
    """Within float32 rounding of the engine's (its GEMMs sum in another order)."""
    scale = max(np.abs(engine_value).max(), 1e-30)
    diff = np.abs(torch_value - engine_value).max() / scale
    expect(torch_value.shape == engine_value.shape and diff <= 1e-5,
           f"{name}: shape {torch_value.shape}, max|torch − engine| / max|engine| = {diff:.1e}")


def bundled_test_images():
    blob = gzip.decompress(open(MNIST, "rb").read())
    return np.frombuffer(blob[16:], np.uint8).reshape(-1, 784)[8000:].astype(np.float32) / 255


def check_embedding(model, x, embed_dir, what):
    r_pooled = np.load(os.path.join(embed_dir, "r_pooled.npy"))
    with torch.no_grad():
        r = model.f_inv(torch.from_numpy(x)).numpy()
        mu, _ = model.encode(torch.from_numpy(x), torch.from_numpy(r_pooled))
    close(f"{what}: f_inv(x)", r, np.load(os.path.join(embed_dir, "r.npy")))
    close(f"{what}: mean of q(v | r_pooled, x)", mu.numpy(),
          np.load(os.path.join(embed_dir, "v.npy")))


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    x_mnist = bundled_test_images()

    # Dense, supervised: the bundled digits, test split = images 8,000..9,999.
    dense = os.path.join(WORK, "dense")
    tool("train_mnist", "--epochs", "1", "--hidden", "32", "--out", dense)
    tool("embed", "--checkpoint", f"{dense}/checkpoint.safetensors", "--split", "test",
         "--out", f"{dense}/embed")
    model = equivae_checkpoint.load(f"{dense}/checkpoint.safetensors")
    check_embedding(model, x_mnist, f"{dense}/embed", "dense")
    with torch.no_grad():
        x4 = torch.from_numpy(x_mnist[:4])
        pixels = model.reconstruct(x4, model.f_inv(x4))
    expect(pixels.shape == (4, 784) and 0 <= pixels.min() and pixels.max() <= 1,
           f"dense: reconstructions [4, 784] in [0, 1]: {tuple(pixels.shape)}")

    # Dense, semi-supervised: q(y|x) as classify computes it.
    semi = os.path.join(WORK, "semi")
    tool("train_mnist", "--epochs", "1", "--hidden", "32", "--labels", "100", "--out", semi)
    tool("classify", "--checkpoint", f"{semi}/checkpoint.safetensors", "--method", "classifier",
         "--out", f"{semi}/predictions.csv")
    engine = np.loadtxt(f"{semi}/predictions.csv", delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    with torch.no_grad():
        predicted = equivae_checkpoint.load(f"{semi}/checkpoint.safetensors").classify(
            torch.from_numpy(x_mnist)).argmax(dim=1).numpy()
    agree = int((predicted == engine).sum())
    # The engine sums in another order: a near-tie may fall the other way (none did here).
    expect(len(engine) == 2000 and agree >= 1998,
           f"semi: q(y|x) argmax agrees on {agree} of {len(engine)}")
    try:
        model.classify(torch.from_numpy(x_mnist[:1]))
        expect(False, "supervised checkpoint: classify() refused")
    except ValueError as e:
        expect("not a semi-supervised" in str(e),
               f"supervised checkpoint: classify() refused ({e})")

    # Conv model with a Gaussian likelihood on SVHN-format files (3×32×32, NCHW rows).
    svhn = os.path.join(WORK, "svhn")
    os.makedirs(svhn)
    subprocess.run([os.path.join(TESTS_BIN, "make_svhn_files"), svhn, "300", "100"], check=True)
    conv = os.path.join(WORK, "conv")
    tool("train_svhn", "--data", svhn, "--validation", "50", "--epochs", "1", "--k", "8",
         "--conv-width", "4", "--hidden", "32", "--out", conv)
    tool("embed", "--checkpoint", f"{conv}/checkpoint.safetensors", "--data", svhn, "--split", "test",
         "--out", f"{conv}/embed")
    X = scipy.io.loadmat(os.path.join(svhn, "test_32x32.mat"))["X"]  # [32, 32, 3, n]
    x_svhn = X.transpose(3, 2, 0, 1).reshape(X.shape[3], -1).astype(np.float32) / 255
    model = equivae_checkpoint.load(f"{conv}/checkpoint.safetensors")
    expect(model.likelihood == "gaussian" and tuple(model.logvar.shape) == (3,),
           f"conv: Gaussian likelihood with a log-variance per channel ({model.likelihood})")
    check_embedding(model, x_svhn, f"{conv}/embed", "conv")

    # Damaged files: named, never loaded.
    blob = open(f"{dense}/checkpoint.safetensors", "rb").read()
    flipped = blob[:-100] + bytes([blob[-100] ^ 1]) + blob[-99:]
    renamed = blob.replace(b'"data_offsets"', b'"data_offsetz"', 1)  # the CRC covers data only
    for name, damaged in (("truncated", blob[: len(blob) // 2]), ("flipped", flipped),
                          ("renamed", renamed)):
        path = os.path.join(WORK, f"{name}.safetensors")
        open(path, "wb").write(damaged)
        try:
            equivae_checkpoint.load(path)
            expect(False, f"{name} checkpoint refused")
        except ValueError as e:
            fault = {"truncated": "truncated", "flipped": "checksum mismatch",
                     "renamed": "malformed entry"}[name]
            expect(path in str(e) and fault in str(e), f"{name} checkpoint refused: {e}")

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("python/equivae_checkpoint.py computes what the engine computes from its checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
