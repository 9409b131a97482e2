"""The timing driver shared by the PyTorch peers (equivae_torch.py, svhn_torch.py).

A model is an nn.Module whose forward(X, idx, P) gathers the batch x = X[idx]
from the data set X [N, D] and returns the loss (-mean ELBO without log p(y));
a semi-supervised one's forward(X, idx, P, uidx) takes what its host sampler gives;
everything else -- batches, optimiser, modes, timing, the JSON line -- is here.

One timed step = sample a batch (numpy on the host, or torch RNG on the device
with --sampler device), gather the images from the data set (already on the
device), forward, backward, Adam. Noise eps ~ N(0, I) is drawn by torch on the
device inside the model's forward.

Modes:
  eager               plain PyTorch; Adam(fused=True) where supported
  compile             torch.compile(loss function) (forward + AOT backward by
                      Inductor); the fused Adam stays eager
  compile-cudagraphs  as compile with mode="reduce-overhead" (CUDA graphs; cuda only)
"""
from __future__ import annotations

import sys
import time

import common

import torch
import torch.nn as nn
import torch.nn.functional as F


def add_flags(p):
    """The PyTorch peers' own flags."""
    p.add_argument("--mode", choices=["eager", "compile", "compile-cudagraphs"], default="eager")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on cuda (default: fp32)")
    return p


def setup(args) -> torch.device:
    """Threads, seed (before the model is built: it fixes the initial weights), device checks."""
    args.warmup = max(1, args.warmup)   # the first step (compilation) is never timed
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    elif args.mode == "compile-cudagraphs":
        sys.exit("--mode compile-cudagraphs needs --device cuda")
    return torch.device(args.device)


class StepLoss(nn.Module):
    """Gather + loss with the data set as a (non-persistent) buffer: CUDA graphs
    (reduce-overhead) treat buffers as static, so the data set is not copied into
    the graph's input buffers each step; only idx and P are."""

    def __init__(self, model: nn.Module, X: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("X", X, persistent=False)

    def forward(self, *batch):
        return self.model(self.X, *batch)


class DeviceSampler:
    """The sampler of common.py written with torch ops on the device."""

    def __init__(self, table: common.ClassTable, k: int, m_max: int, spe: int, device, seed: int):
        self.C, self.k = table.C, k
        self.B = self.C * k
        self.m_max = min(m_max, k - 1)
        self.spe = spe
        self.dev = device
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed + 1)
        self.table = torch.as_tensor(table.table, dtype=torch.int64, device=device)   # [C, n_max]
        self.counts = torch.as_tensor(table.counts, dtype=torch.int64, device=device)  # [C]
        self.pad = self.table < 0
        self.arange_k = torch.arange(k, device=device)
        rows = torch.arange(self.B, device=device)
        self.self_mask = F.one_hot(rows % k, k).bool()                                 # [B, k]
        self.seg_onehot = F.one_hot(rows // k, self.C).float()                         # [B, C]
        self.step = 0
        self.perm = None

    def sample(self):
        s = self.step % self.spe
        self.step += 1
        if s == 0:   # new epoch: one permutation per class (pads sorted to the end)
            keys = torch.rand(self.table.shape, device=self.dev, generator=self.gen)
            keys = keys.masked_fill(self.pad, 2.0)
            self.perm = torch.gather(self.table, 1, torch.argsort(keys, dim=1))
        pos = (s * self.k + self.arange_k)[None, :] % self.counts[:, None]            # [C, k]
        idx = torch.gather(self.perm, 1, pos).reshape(self.B)
        m = torch.randint(1, self.m_max + 1, (self.B,), device=self.dev, generator=self.gen)
        keys = torch.rand((self.B, self.k), device=self.dev, generator=self.gen)
        keys = keys.masked_fill(self.self_mask, 2.0)
        rank = torch.argsort(torch.argsort(keys, dim=1), dim=1)
        w = (rank < m[:, None]).float() / m[:, None].float()                          # [B, k]
        P = (self.seg_onehot[:, :, None] * w[:, None, :]).reshape(self.B, self.B)
        return idx, P


def run(args, model: nn.Module, x_np, y_np, extra: dict, log_prior: float = 0.0,
        host_sampler=None):
    """Trains model on x_np [N, D] float32 / y_np [N] in the chosen mode, prints the JSON line.
    extra: fields for the JSON line; log_prior: added to the reported ELBO; host_sampler: one
    whose sample() gives the model's batch arrays after X (default: common.HostSampler's
    (idx, P); --sampler device has none other)."""
    dev = torch.device(args.device)
    sampler_kind = args.sampler or "host"
    N = len(y_np)
    B = args.classes * args.k
    spe = N // B
    table = common.ClassTable(y_np, args.classes, args.k)
    X = torch.as_tensor(x_np, device=dev)                       # whole data set on the device

    model = model.to(dev)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                               fused=True)
        adam_impl = "fused"
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
        adam_impl = "default"

    step_loss = StepLoss(model, X)
    if args.mode == "eager":
        loss_fn = step_loss
    elif args.mode == "compile":
        loss_fn = torch.compile(step_loss)
    else:
        loss_fn = torch.compile(step_loss, mode="reduce-overhead")
    cudagraphs = args.mode == "compile-cudagraphs"

    if host_sampler is not None and sampler_kind != "host":
        sys.exit("this model samples its batches on the host only (--sampler host)")
    if sampler_kind == "host":
        hs = host_sampler or common.HostSampler(table, args.k, args.m_max, spe, args.seed)

        def sample():
            return tuple(torch.from_numpy(a).to(dev, non_blocking=False) for a in hs.sample())
    else:
        ds = DeviceSampler(table, args.k, args.m_max, spe, dev, args.seed)
        sample = ds.sample

    def step():
        batch = sample()
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = loss_fn(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach().clone() if cudagraphs else loss.detach()

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    common.log(args, f"[torch {torch.__version__}] mode={args.mode} device={args.device} "
                     f"threads={torch.get_num_threads()} N={N} B={B} steps/epoch={spe} "
                     f"sampler={sampler_kind} adam={adam_impl}")
    losses = []
    t0 = time.perf_counter()
    losses.append(step())        # first step: includes compilation for the compile modes
    sync()
    first_step_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        losses.append(step())
    sync()

    per_window, total = [], 0.0
    done = 0
    while done < args.steps:
        n = min(args.window, args.steps - done)
        t0 = common.now_ms()
        for _ in range(n):
            losses.append(step())
        sync()
        dt = common.now_ms() - t0
        per_window.append(dt / n)
        total += dt
        done += n

    loss_vals = torch.stack(losses).float().cpu().tolist()
    res = common.summarise(args, "pytorch", args.mode, per_window, total, args.steps, loss_vals, {
        "sampler": sampler_kind,
        "sampling_timed": True,
        "pooling": "dense [B,B] matmul",
        "matmul": "tf32" if (args.tf32 and args.device == "cuda") else "fp32",
        "adam": adam_impl,
        "first_step_s": round(first_step_s, 3),
        "n_train": N,
        "framework": f"torch {torch.__version__}",
        **extra,
    }, log_prior)
    common.log(args, f"elbo first {res['elbo_first']:.2f} -> last {res['elbo_last']:.2f}; "
                     f"{res['ms_per_step_median']:.3f} ms/step median")
    common.emit(res)
