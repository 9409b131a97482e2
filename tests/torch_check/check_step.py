#!/usr/bin/env python3
"""Recomputes one EquiVAE training step in PyTorch (float64) from what dump_step wrote, and
compares the loss terms and every gradient with the engine's.

usage: check_step.py DIR        (exit 0: every figure agrees; 1: a mismatch, listed)

First each step's batch is checked as the paper builds it (segments, leave-one-out pooling sets,
and for MNIST every row against the IDX files), since the objective takes the batch as given.

With several steps dumped (dump_step DIR MODE STEPS), PyTorch's torch.optim.Adam (lr 1e-3,
β 0.9 / 0.999, ε 1e-8) then runs them on the same batches and noise, and the weights after
the last update must be the engine's.

An independent implementation of the objective (README "The model", docs/semi-supervised.md and
docs/svhn.md): the networks from the checkpoint's tensors (dense weights [in, out]; convolutions
k4 s2 p1 in PyTorch's layouts; ReLU between layers, after the encoder's conv trunk too),
leave-one-out pooling r = P·f_inv(x_labelled) with P[i, j] = 1/m_i over each row's set,
q(v | r, x) = N(μ, e^{lv}), v = μ + e^{lv/2}·ε with the engine's ε, Bernoulli soft-target
likelihood Σ x·l − softplus(l) (SVHN: Gaussian with a learned log-variance per channel),
KL(q‖N(0, I)); semi-supervised: q(y|x) softmax, labelled
−log q, and per unlabelled item L = Σ_y q_y (ELBO_y + log p(y) − log q_y). Loss:
mean_B(−ELBO) + α·mean_B(−log q(y|x)) + w·mean_U(−L); its gradients by autograd.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from equivae_checkpoint import EquiVae  # noqa: E402  (the networks; the objective is below)

torch.set_default_dtype(torch.float64)
TOLERANCE = 1e-10  # float64 on both sides: only the order of sums differs


def load(dirpath, name):
    return torch.from_numpy(np.load(os.path.join(dirpath, name + ".npy")))


def model_of(dirpath, x):
    """The networks (python/equivae_checkpoint.py's EquiVae, float64) from the dumped tensors;
    a conv model's images are square, with the first convolution's input channels."""
    names = [n[: -len(".npy")] for n in os.listdir(dirpath) if n.endswith(".npy")]
    tensors = {n: np.load(os.path.join(dirpath, n + ".npy")) for n in names
               if n.endswith((".weight", ".bias")) or n == "decoder.logvar"}
    config = {}
    first = tensors["finv.0.weight"]
    if first.ndim == 4:
        side = int(round((x.shape[1] // first.shape[1]) ** 0.5))
        config = {"channels": first.shape[1], "height": side, "width": side}
    return EquiVae(tensors, config)


def read_digits(meta):
    """The MNIST digits the dump's batches came from, read here from the IDX files (gzip, big-
    endian header) as the paper's data: pixels / 255 in float32, as the engine stores them."""
    import gzip
    with gzip.open(meta["images"]) as f:
        images = f.read()
    with gzip.open(meta["labels"]) as f:
        labels = f.read()
    n, rows, cols = (int.from_bytes(images[i:i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(images, np.uint8, offset=16).reshape(n, rows * cols)
    n = meta["digits"]
    return (pixels[:n].astype(np.float32) / np.float32(255.0),
            np.frombuffer(labels, np.uint8, offset=8)[:n].astype(np.int64))


def batch_problems(stepdir, meta, digits):
    """The batch the engine's sampler built, checked against the paper rather than recomputed
    from it (the objective above takes the rows and pooling sets as given, so a sampler error
    would pass it): labelled segment c holds k distinct items of class c; each row of item u's
    block B + u·C + y is item u, which is not in the labelled batch; a labelled row pools
    1..min(m_max, k − 1) distinct others of its own segment, never itself (eq. 2's leave-one-
    out); unlabelled row (u, y) pools 1..min(m_max, k) items of segment y. MNIST (digits
    given): every row is a digit of the files / 255, of its segment's class."""
    B, U, C, k, m_max = meta["B"], meta["U"], meta["C"], meta["k"], meta["m_max"]
    x = np.load(os.path.join(stepdir, "x.npy"))
    offsets = np.load(os.path.join(stepdir, "offsets.npy"))
    members = np.load(os.path.join(stepdir, "members.npy"))
    problems = []
    if len(offsets) != x.shape[0] + 1 or x.shape[0] != B + U * C:
        return [f"{x.shape[0]} rows and {len(offsets) - 1} pooling sets for B + U·C = {B + U * C}"]
    item = [r.tobytes() for r in x.astype(np.float32)]  # a row's identity: its pixels
    for c in range(C):
        if len(set(item[c * k:(c + 1) * k])) != k:
            problems.append(f"segment {c} repeats an item")
    for u in range(U):
        block = item[B + u * C:B + (u + 1) * C]
        if len(set(block)) != 1:
            problems.append(f"unlabelled item {u}: its {C} rows are not one item")
        elif block[0] in set(item[:B]):
            problems.append(f"unlabelled item {u} is also in the labelled batch")
    for i in range(x.shape[0]):
        pool = members[offsets[i]:offsets[i + 1]]
        segment = i // k if i < B else (i - B) % C
        most = min(m_max, k - 1) if i < B else min(m_max, k)
        if not 1 <= len(pool) <= most or len(set(pool.tolist())) != len(pool):
            problems.append(f"row {i}: pools {len(pool)} items ({pool.tolist()}), not 1..{most}"
                            " distinct")
        if any(j // k != segment for j in pool):
            problems.append(f"row {i}: pools outside segment {segment} ({pool.tolist()})")
        if i < B and i in pool:
            problems.append(f"row {i} pools itself")
    if digits is not None:
        images, labels = digits
        index = {images[j].tobytes(): j for j in range(len(images))}
        for i in range(x.shape[0]):
            j = index.get(item[i])
            if j is None or not np.array_equal(x[i], images[j].astype(np.float64)):
                problems.append(f"row {i} is not a digit of {meta['images']} / 255")
            elif i < B and labels[j] != i // k:
                problems.append(f"row {i}: a {labels[j]} in segment {i // k}")
    return problems


def objective(stepdir, meta, model):
    """The loss of one step's batch (stepdir) and its loss terms, from the networks' tensors."""
    B, U, C, k = meta["B"], meta["U"], meta["C"], meta["k"]
    x = load(stepdir, "x")
    eps = load(stepdir, "eps")
    offsets = np.load(os.path.join(stepdir, "offsets.npy"))
    members = np.load(os.path.join(stepdir, "members.npy"))
    R = x.shape[0]
    P = torch.zeros(R, B)
    for i in range(R):
        m = members[offsets[i]:offsets[i + 1]]
        P[i, torch.from_numpy(m.astype(np.int64))] = 1.0 / len(m)
    r = P @ model.f_inv(x[:B])                                # [R, d_r]
    # The encoder: its conv trunk on x (SVHN; ReLU after it too), then the dense head on
    # [features ; r]. The dense MNIST encoder has no trunk: features = x.
    mu, lv = model.encode(x, r)                               # [R, d_v] each
    v = mu + torch.exp(0.5 * lv) * eps
    out = model.decode(r, v)                                  # [R, D]: logits, or μ
    if model.logvar is not None:  # Gaussian: log N(x | μ, e^{lv_c}) per pixel
        # NCHW rows: channel-major
        lvp = model.logvar.repeat_interleave(x.shape[1] // model.logvar.shape[0])
        ll = -0.5 * ((x - out) ** 2 * torch.exp(-lvp) + lvp + np.log(2 * np.pi)).sum(dim=1)
    else:  # Bernoulli with soft targets
        ll = (x * out - F.softplus(out)).sum(dim=1)           # [R]
    kl = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum(dim=1)
    loss = -(ll[:B] - kl[:B]).mean()
    got = {"recon": ll[:B].mean().item(), "kl": kl[:B].mean().item()}
    if meta["mode"] in ("semi", "svhn-semi"):
        log_prior = torch.tensor(meta["log_prior"])
        qlogits = model.classify(load(stepdir, "xq"))         # [B + U, C]
        labels = torch.arange(B) // k                          # segment c holds class c
        nll = F.cross_entropy(qlogits[:B], labels, reduction="none")
        logq = F.log_softmax(qlogits[B:], dim=1)               # [U, C]
        elbo = (ll[B:] - kl[B:]).reshape(U, C)                 # row B + u·C + y
        bound = (logq.exp() * (elbo + log_prior - logq)).sum(dim=1)
        loss = loss + meta["alpha"] * nll.mean() - meta["w"] * bound.mean()
        got["classifier_nll"] = nll.mean().item()
        got["unlabelled_bound"] = bound.mean().item()
    return loss, got


def compare_terms(step, got, reference, failures):
    for key, value in got.items():
        ref = reference[key]
        err = abs(value - ref) / max(1.0, abs(ref))
        print(f"step {step}: {key:16s} engine {ref: .12e}  torch {value: .12e}  rel. diff {err:.1e}")
        if not err <= TOLERANCE:
            failures.append(f"step {step} {key}")


def main():
    dirpath = sys.argv[1]
    meta = json.load(open(os.path.join(dirpath, "meta.json")))
    model = model_of(dirpath, load(os.path.join(dirpath, "step0"), "x"))
    named = []
    for net in ("finv", "encoder", "decoder", "classifier"):
        network = getattr(model, net)
        named += [(f"{net}.{i}.weight", W) for i, W in enumerate(network.weights)]
        named += [(f"{net}.{i}.bias", b) for i, b in enumerate(network.biases)]
    if model.logvar is not None:
        named.append(("decoder.logvar", model.logvar))
    failures = []

    # Every step's batch as the paper builds it, from the data files where there are some.
    digits = read_digits(meta) if "images" in meta else None
    for s in range(len(meta["steps"])):
        problems = batch_problems(os.path.join(dirpath, f"step{s}"), meta, digits)
        for p in problems[:5]:
            print(f"step {s} batch: {p}")
        failures += [f"step {s} batch: {p}" for p in problems]
    print(f"{len(meta['steps'])} batch(es) checked: segments, pooling sets"
          + (", rows against the IDX files" if digits is not None else ""))

    # Step 0: the loss terms and every gradient.
    loss, got = objective(os.path.join(dirpath, "step0"), meta, model)
    loss.backward()
    compare_terms(0, got, meta["steps"][0], failures)
    worst = 0.0
    for name, t in named:
        engine = load(dirpath, name + ".grad")
        err = (engine - t.grad).abs().max().item() / max(t.grad.abs().max().item(), 1e-300)
        worst = max(worst, err)
        if not err <= TOLERANCE:
            failures.append(f"{name}: gradient max diff / max {err:.2e}")
    print(f"{len(named)} gradient tensors, worst max|diff| / max|grad| {worst:.1e}")

    # Several steps: PyTorch's Adam (the engine's settings) over the same batches and noise,
    # then the weights. An update is at most ~lr per element, so the tolerance is a fraction of
    # lr: 1e-6, since Adam divides by √v + ε and so magnifies the gradients' last-digit
    # differences where a gradient is near ε (a wrong update rule is off by ~lr).
    steps = len(meta["steps"])
    if steps > 1:
        optimiser = torch.optim.Adam([t for _, t in named], lr=meta["lr"], betas=(0.9, 0.999),
                                     eps=1e-8)
        optimiser.step()  # step 0's gradients are already there
        for s in range(1, steps):
            optimiser.zero_grad()
            loss, got = objective(os.path.join(dirpath, f"step{s}"), meta, model)
            loss.backward()
            compare_terms(s, got, meta["steps"][s], failures)
            optimiser.step()
        worst = 0.0
        for name, t in named:
            err = (load(dirpath, name + ".final") - t.detach()).abs().max().item() / meta["lr"]
            worst = max(worst, err)
            if not err <= 1e-6:
                failures.append(f"{name}: weights after {steps} Adam steps differ by {err:.2e} lr")
        print(f"weights after {steps} Adam steps: worst max|diff| {worst:.1e} lr")

    if failures:
        print("MISMATCH: " + "; ".join(failures[:20]))
        return 1
    print(f"{meta['mode']}: the engine's loss terms and gradients are PyTorch's (float64)"
          + (f", and its weights after {steps} Adam steps" if steps > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
