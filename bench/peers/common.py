"""Shared pieces of the EquiVAE peer benchmarks (PyTorch / JAX).

Data loading (IDX / IDX.gz for MNIST, train_32x32.mat or made-up images for
SVHN), the class-balanced batch sampler in numpy, the common command-line
flags, the JAX environment, the timing loop bookkeeping and the final JSON
line. Framework-free: only numpy is imported here, so the JAX scripts can set
their environment before anything loads XLA.

Batch construction (identical semantics in numpy here, in torch and in JAX):

* C classes, k items per class, B = C*k rows; rows c*k .. c*k+k-1 are class c.
* Items: at the start of each epoch every class's item list is shuffled once
  (an independent permutation per class); step s of the epoch takes the
  positions (s*k + j) mod n_c, j = 0..k-1, of class c's permutation. Items of
  one batch are therefore distinct (drawn without replacement), and the data
  are covered class by class. One epoch = N // B steps.
* Pooling sets: each row i draws m_i ~ Uniform{1..m_max} (m_max capped at
  k-1) and m_i distinct OTHER rows of its own segment (never itself): row i
  gets random keys over the k positions of its segment, its own position gets
  the largest key, and the m_i positions with the smallest keys are chosen.
* The pooling is a dense [B, B] matrix P with P[i, j] = 1/m_i for the chosen
  j (block diagonal), so r = P @ f_inv(x): one small GEMM forward and one
  (P^T @ dR) backward. That is the fastest form in both frameworks at B = 160
  (a gather + mean needs a scatter-add in the backward).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_IMAGES = os.path.join(REPO, "data", "mnist10k-images-idx3-ubyte.gz")
DEFAULT_LABELS = os.path.join(REPO, "data", "mnist10k-labels-idx1-ubyte.gz")
DEFAULT_TRAIN_N = 8000  # first 8,000 of the bundled 10,000 digits are the training set
SVHN_TRAIN_N = 70000    # the engine's SVHN split: the first 70,000 of train_32x32.mat train
MADE_UP_SVHN_N = 8000   # made-up SVHN-shaped images when no --data-dir is given
SVHN_SHAPE = (3, 32, 32)


# ----------------------------------------------------------------------------
# data

def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    return arr.reshape(dims)


def _find(dirpath: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        p = os.path.join(dirpath, name)
        if os.path.exists(p):
            return p
    # some distributions use a dot instead of a dash before "idx"
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        p = os.path.join(dirpath, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{stem}[.gz] not found in {dirpath}")


def load_data(args) -> tuple[np.ndarray, np.ndarray]:
    """Returns (x [N, 784] float32 in [0, 1], y [N] int64) of the training set."""
    if args.data_dir:
        images = read_idx(_find(args.data_dir, "train-images-idx3-ubyte"))
        labels = read_idx(_find(args.data_dir, "train-labels-idx1-ubyte"))
        n = len(labels) if args.n_train is None else args.n_train
    else:
        images = read_idx(DEFAULT_IMAGES)
        labels = read_idx(DEFAULT_LABELS)
        n = DEFAULT_TRAIN_N if args.n_train is None else args.n_train
    x = images[:n].reshape(n, -1).astype(np.float32) / np.float32(255.0)
    y = labels[:n].astype(np.int64)
    return np.ascontiguousarray(x), y


def load_svhn(args) -> tuple[np.ndarray, np.ndarray, str]:
    """Returns (x [N, 3072] float32 in [0, 1], NCHW rows as the engine reads them: three
    32x32 planes R, G, B; y [N] int64 digits 0..9; a description of the source)."""
    if args.data_dir:
        path = os.path.join(args.data_dir, "train_32x32.mat")
        if not os.path.exists(path):
            raise FileNotFoundError(f"train_32x32.mat not found in {args.data_dir}")
        try:
            import scipy.io
        except ImportError:
            sys.exit(f"{path}: reading it needs scipy (pip install scipy)")
        mat = scipy.io.loadmat(path)
        X, labels = mat["X"], mat["y"].reshape(-1)                 # X [32, 32, 3, N] (h, w, c, n)
        if X.dtype != np.uint8 or X.shape[:3] != (32, 32, 3) or X.shape[3] != len(labels):
            raise ValueError(f"{path}: X is {X.dtype} {X.shape}, y has {len(labels)} labels; "
                             "expected X uint8 [32, 32, 3, N] and N labels")
        n = min(X.shape[3], SVHN_TRAIN_N if args.n_train is None else args.n_train)
        images = X[..., :n].transpose(3, 2, 0, 1)                   # [n, 3, 32, 32]
        y = labels[:n].astype(np.int64) % 10                         # SVHN's 10 is the digit 0
        source = f"{path} (first {n} of {X.shape[3]})"
    else:
        n = MADE_UP_SVHN_N if args.n_train is None else args.n_train
        rng = np.random.default_rng(2019)
        images = rng.integers(0, 256, size=(n,) + SVHN_SHAPE, dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        source = f"made-up: {n} uniform random images, random labels"
    x = images.reshape(n, -1).astype(np.float32)
    x /= np.float32(255.0)
    return np.ascontiguousarray(x), y, source


def mean_log_prior(y: np.ndarray, num_classes: int) -> float:
    """Mean over classes of log p(y), p(y) = class frequencies of the training set: the
    constant term log p(y) of the ELBO (eq. 4) over a class-balanced batch, as the engine
    adds it to the ELBO it reports (it moves no gradient)."""
    counts = np.bincount(y, minlength=num_classes)[:num_classes].astype(np.float64)
    return float(np.mean(np.log(counts / len(y))))


class ClassTable:
    """Per-class item lists as a padded [C, n_max] table (pad = -1) + counts."""

    def __init__(self, y: np.ndarray, num_classes: int, k: int):
        self.C = num_classes
        self.lists = [np.flatnonzero(y == c).astype(np.int32) for c in range(num_classes)]
        self.counts = np.array([len(l) for l in self.lists], dtype=np.int32)
        if self.counts.min() < k:
            raise ValueError(f"a class has {self.counts.min()} items < k = {k}")
        self.n_max = int(self.counts.max())
        self.table = np.full((num_classes, self.n_max), -1, dtype=np.int32)
        for c, l in enumerate(self.lists):
            self.table[c, :len(l)] = l


# ----------------------------------------------------------------------------
# batch sampler (numpy, host)

def pool_weights(rng, rows: int, k: int, m_max: int, exclude=None) -> np.ndarray:
    """[rows, k] float32: row i chooses m_i ~ Uniform{1..m_max} distinct positions out of k
    (never those `exclude` indexes) with weight 1/m_i -- random keys, the m_i smallest."""
    m = rng.integers(1, m_max + 1, size=rows)
    keys = rng.random((rows, k), dtype=np.float32)
    if exclude is not None:
        keys[exclude] = 2.0
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)               # rank of each position
    return np.where(rank < m[:, None], (1.0 / m)[:, None], 0.0).astype(np.float32)


def segment_rows(w: np.ndarray, segment: np.ndarray, C: int) -> np.ndarray:
    """Pooling rows [rows, C*k] of a class-sorted batch: row i's weights w[i] over the k
    positions of class segment[i]'s segment, zero elsewhere."""
    rows, k = w.shape
    P = np.zeros((rows, C, k), dtype=np.float32)
    P[np.arange(rows), segment] = w
    return P.reshape(rows, C * k)


class HostSampler:
    """Class-balanced batches + leave-one-out pooling matrices, in numpy."""

    def __init__(self, table: ClassTable, k: int, m_max: int, steps_per_epoch: int, seed: int):
        self.t = table
        self.C, self.k = table.C, k
        self.B = self.C * k
        self.m_max = min(m_max, k - 1)
        self.spe = steps_per_epoch
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.perms = None
        self.seg_start = (np.arange(self.B) // k) * k            # [B]
        self.self_pos = np.arange(self.B) % k                     # [B]
        self.rows = np.arange(self.B)
        self.cols_j = np.arange(k, dtype=np.int32)

    def _new_epoch(self):
        self.perms = [l[self.rng.permutation(len(l))] for l in self.t.lists]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (idx [B] int32 item indices, P [B, B] float32 pooling matrix)."""
        s = self.step % self.spe
        if s == 0:
            self._new_epoch()
        self.step += 1
        k = self.k
        idx = np.empty(self.B, dtype=np.int32)
        for c, perm in enumerate(self.perms):
            n_c = len(perm)
            pos = (s * k + self.cols_j) % n_c
            idx[c * k:(c + 1) * k] = perm[pos]
        # [B, k]: never a row itself; block diagonal
        w = pool_weights(self.rng, self.B, k, self.m_max, (self.rows, self.self_pos))
        return idx, segment_rows(w, self.seg_start // k, self.C)


class HostSemiSampler:
    """Semi-supervised batches (the engine's semi-supervised step, docs/semi-supervised.md):
    HostSampler's labelled batch over the labelled items, plus U unlabelled items per step
    (one epoch = one pass over them, shuffled once per epoch), each paired with every class
    y: row B + u*C + y pools m ~ Uniform{1..min(m_max, k)} distinct items of class y's segment
    of the labelled batch (the unlabelled item is not in it, so all k may be chosen).

    sample() -> (idx [B] int32, P [R, B] float32 with R = B + U*C, uidx [U] int32): item
    indices into the whole data set (labelled and unlabelled items are both rows of it)."""

    def __init__(self, y: np.ndarray, labelled: np.ndarray, unlabelled: np.ndarray, C: int,
                 k: int, m_max: int, U: int, seed: int):
        self.labelled, self.unlabelled = labelled, unlabelled
        self.table = ClassTable(y[labelled], C, k)
        self.C, self.k, self.U = C, k, U
        self.spe = len(unlabelled) // U
        self.labelled_sampler = HostSampler(self.table, k, m_max, self.spe, seed)
        self.m_max_u = min(m_max, k)
        self.rng = np.random.default_rng(seed + 7)
        self.step = 0
        self.order = None
        self.segment = np.tile(np.arange(C), U)                           # class y of each row

    def sample(self):
        idx, P = self.labelled_sampler.sample()
        s = self.step % self.spe
        if s == 0:
            self.order = self.unlabelled[self.rng.permutation(len(self.unlabelled))]
        self.step += 1
        uidx = self.order[s * self.U:(s + 1) * self.U].astype(np.int32)
        w = pool_weights(self.rng, self.U * self.C, self.k, self.m_max_u)
        Pu = segment_rows(w, self.segment, self.C)
        return self.labelled[idx].astype(np.int32), np.concatenate([P, Pu]), uidx


def semi_split(y: np.ndarray, classes: int, labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled) item indices: the first labels / classes items of each class
    keep their labels, all the others train unlabelled. (The engine draws the labelled ones
    by seed; a step's cost depends only on the sizes.)"""
    per_class = labels // classes
    labelled = np.sort(np.concatenate(
        [np.flatnonzero(y == c)[:per_class] for c in range(classes)]))
    mask = np.ones(len(y), dtype=bool)
    mask[labelled] = False
    return labelled, np.flatnonzero(mask)


# ----------------------------------------------------------------------------
# CLI + reporting

def common_parser(description: str, svhn: bool = False) -> argparse.ArgumentParser:
    """The flags of every peer; svhn: the SVHN defaults (m_max 10, .mat data)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=200, help="timed training steps (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sampler", choices=["host", "device"], default=None,
                   help="where batches are sampled: numpy on the host (P and idx copied to the "
                        "device each step) or framework RNG on the device (default: host for "
                        "step modes; JAX --mode epoch always samples on the device)")
    p.add_argument("--window", type=int, default=10,
                   help="steps per timing window: the device is synchronised at the end of each "
                        "window; median over windows of (window time / window steps) (default 10; "
                        "1 = every step synchronised)")
    if svhn:
        p.add_argument("--data-dir", default=None,
                       help="directory with SVHN's train_32x32.mat (read with scipy; the first "
                            "70,000 images, the engine's training split); default: 8,000 made-up "
                            "images (uniform random pixels and labels)")
    else:
        p.add_argument("--data-dir", default=None,
                       help="directory with standard MNIST/Fashion-MNIST names "
                            "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]); "
                            "default: the bundled 10k set, first 8,000 as training set")
    p.add_argument("--n-train", type=int, default=None,
                   help="use only the first N training items (made-up SVHN: make N)")
    p.add_argument("--k", type=int, default=16, help="items per class in a batch (default 16)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--m-max", type=int, default=10 if svhn else 7,
                   help=f"max pooled items per row (capped at k-1) (default {10 if svhn else 7})")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--d-r", type=int, default=16)
    p.add_argument("--d-v", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    if not svhn:
        p.add_argument("--unlabelled", type=int, default=0,
                       help="semi-supervised: unlabelled items per step, each paired with every "
                            "class (the paper's setting: 100, with --labels 3000 --d-r 8 --d-v 8 "
                            "--m-max 4); 0: supervised (default)")
        p.add_argument("--labels", type=int, default=3000,
                       help="semi-supervised: labelled items (labels / classes per class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-only", action="store_true", help="print only the final JSON line")
    return p


def jax_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The JAX peers' own flags."""
    p.add_argument("--mode", choices=["step", "epoch"], default="step")
    p.add_argument("--precision", choices=["default", "high", "highest"], default="default",
                   help="jax_default_matmul_precision (on GPU 'default' means TF32; "
                        "'highest' = fp32) (default: default)")
    return p


def jax_environment(args):
    """Sets the XLA environment; call before jax is imported. PJRT_NPROC / NPROC = --threads
    (the size of the XLA CPU client's intra-op thread pool) and XLA_FLAGS +=
    --xla_cpu_multi_thread_eigen=true|false (false when --threads 1)."""
    os.environ["PJRT_NPROC"] = str(args.threads)
    os.environ["NPROC"] = str(args.threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags += f" --xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu" if args.device == "cpu" else "cuda")
    if args.device == "cuda":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def log(args, *a):
    if not args.json_only:
        print(*a, file=sys.stderr, flush=True)


def summarise(args, peer: str, mode: str, per_step_ms: list[float], total_ms: float,
              n_steps: int, losses: list[float], extra: dict | None = None,
              log_prior: float = 0.0) -> dict:
    """per_step_ms: per-window mean step times; total_ms over n_steps timed steps.
    ELBO = -loss + log_prior; elbo_first / elbo_last: means over the first and the last
    20 steps run (each half of the run when it has fewer than 40, so they never overlap)."""
    B = args.classes * args.k
    elbo = [log_prior - float(l) for l in losses]
    n = max(1, min(20, len(elbo) // 2))
    mean_ms = total_ms / n_steps
    out = {
        "peer": peer,
        "mode": mode,
        "device": args.device,
        "threads": args.threads,
        "batch": B,
        "ms_per_step_median": round(statistics.median(per_step_ms), 4),
        "ms_per_step_mean": round(mean_ms, 4),
        "examples_per_s": round(B / (mean_ms / 1e3), 1),
        "elbo_first": round(sum(elbo[:n]) / n, 4),
        "elbo_last": round(sum(elbo[-n:]) / n, 4),
        "loss_final": round(float(losses[-1]), 4),
        "steps": n_steps,
        "warmup": args.warmup,
    }
    if extra:
        out.update(extra)
    return out


def emit(result: dict):
    print(json.dumps(result), flush=True)


def now_ms() -> float:
    return time.perf_counter() * 1e3
