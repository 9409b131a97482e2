"""The step, sampler and timing driver shared by the JAX peers (equivae_jax.py,
svhn_jax.py). Import it only after common.jax_environment(args).

A model is init_params(key) -> params (a pytree) and loss_fn(params, x, P, eps)
-> -mean ELBO without log p(y), for the gathered batch x [B, D], the pooling
matrix P [B, B] and the noise eps [B, d_v]; everything else is here. (A model
with its own host sampler -- the semi-supervised one -- gathers its rows itself:
loss_fn(params, X, *batch, eps).)

Modes:
  step   the whole step (gather, forward, backward, Adam; eps ~ N(0, I) from
         jax.random) under one jax.jit, one dispatch per step. Batches are
         sampled in numpy on the host (idx [B] and P [B, B] passed to the jit,
         i.e. copied to the device every step) -- or with --sampler device by
         jax.random inside the same jit (plus one small jit per epoch that
         shuffles the class lists). Sampling is inside the timed region.
  epoch  a whole epoch (N // B steps) under one jit: lax.scan over the steps,
         batches sampled on the device by jax.random; per-step time = epoch
         time / steps per epoch. --steps is rounded up to whole epochs.

Adam is written by hand inside the jit: the same update as torch.optim.Adam
(no weight decay, no amsgrad), (0.9, 0.999), eps 1e-8.
"""
from __future__ import annotations

import math
import sys
import time

import common

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

B1, B2, ADAM_EPS = 0.9, 0.999, 1e-8


def uniform(key, shape, fan_in: int):
    """PyTorch's default init of weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def adam_update(params, grads, m, v, t, lr):
    """torch.optim.Adam (no weight decay, no amsgrad), t = step count after this update."""
    m = jax.tree_util.tree_map(lambda m_, g: B1 * m_ + (1.0 - B1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda v_, g: B2 * v_ + (1.0 - B2) * g * g, v, grads)
    bc1 = 1.0 - B1 ** t
    bc2 = 1.0 - B2 ** t
    step_size = lr / bc1
    sqrt_bc2 = jnp.sqrt(bc2)
    params = jax.tree_util.tree_map(
        lambda p_, m_, v_: p_ - step_size * m_ / (jnp.sqrt(v_) / sqrt_bc2 + ADAM_EPS),
        params, m, v)
    return params, m, v


def make_train_step(loss_fn, lr, d_v, gathers_itself=False):
    def train_step(state, X, *batch):
        """state = (params, m, v, t, key); batch = (idx, P, ...), P [rows, B] giving the rows
        that draw noise. One full step; returns (state, loss). loss_fn(params, X[idx], P, eps),
        or with gathers_itself loss_fn(params, X, *batch, eps)."""
        params, m, v, t, key = state
        key, k_eps = jax.random.split(key)
        eps = jax.random.normal(k_eps, (batch[1].shape[0], d_v), jnp.float32)
        if gathers_itself:
            loss, grads = jax.value_and_grad(loss_fn)(params, X, *batch, eps)
        else:
            idx, P = batch
            loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], P, eps)
        t = t + 1.0
        params, m, v = adam_update(params, grads, m, v, t, lr)
        return (params, m, v, t, key), loss
    return train_step


# --- device sampler (jax.random), same semantics as common.HostSampler --------------------

class DeviceSamplerConsts:
    def __init__(self, table: common.ClassTable, k: int, m_max: int):
        self.C, self.k = table.C, k
        self.B = self.C * k
        self.m_max = min(m_max, k - 1)
        self.table = jnp.asarray(table.table)                       # [C, n_max] int32, pad -1
        self.counts = jnp.asarray(table.counts)                     # [C] int32
        rows = np.arange(self.B)
        self.self_mask = jnp.asarray(rows[:, None] % k == np.arange(k)[None, :])        # [B, k]
        self.seg_onehot = jnp.asarray((rows[:, None] // k == np.arange(self.C)[None, :])
                                      .astype(np.float32))                               # [B, C]


def make_perm(key, c: DeviceSamplerConsts):
    """Per-class shuffled item lists for one epoch: [C, n_max], valid entries first."""
    keys = jax.random.uniform(key, c.table.shape)
    keys = jnp.where(c.table < 0, 2.0, keys)
    return jnp.take_along_axis(c.table, jnp.argsort(keys, axis=1), axis=1)


def pool_weights(k_m, k_sel, rows: int, k: int, m_max: int, exclude=None):
    """common.pool_weights drawn by jax.random: [rows, k], m_i ~ Uniform{1..m_max} positions
    with weight 1/m_i, never where `exclude` [rows, k] is set."""
    m = jax.random.randint(k_m, (rows,), 1, m_max + 1)
    keys = jax.random.uniform(k_sel, (rows, k))
    if exclude is not None:
        keys = jnp.where(exclude, 2.0, keys)
    rank = jnp.argsort(jnp.argsort(keys, axis=1), axis=1)
    return (rank < m[:, None]).astype(jnp.float32) / m[:, None].astype(jnp.float32)


def segment_rows(w, seg_onehot):
    """common.segment_rows with the segments one-hot [rows, C]: [rows, C*k]."""
    return (seg_onehot[:, :, None] * w[:, None, :]).reshape(w.shape[0], -1)


def device_sample(key, perm, s, c: DeviceSamplerConsts):
    """Batch s of the epoch: idx [B] int32, P [B, B] float32."""
    k_m, k_sel = jax.random.split(key)
    pos = (s * c.k + jnp.arange(c.k, dtype=jnp.int32))[None, :] % c.counts[:, None]   # [C, k]
    idx = jnp.take_along_axis(perm, pos, axis=1).reshape(c.B)
    w = pool_weights(k_m, k_sel, c.B, c.k, c.m_max, c.self_mask)   # never a row itself
    return idx, segment_rows(w, c.seg_onehot)


class EpochSampler:
    """The supervised batches of common.HostSampler, drawn on the device inside a jit: a new
    epoch's state (per-class shuffles) and step s's batch (idx, P)."""

    def __init__(self, table: common.ClassTable, k: int, m_max: int, spe: int):
        self.consts = DeviceSamplerConsts(table, k, m_max)
        self.spe = spe

    def new_epoch(self, key):
        return make_perm(key, self.consts)

    def sample(self, key, state, s):
        return device_sample(key, state, s, self.consts)


class SemiEpochSampler:
    """common.HostSemiSampler's batches drawn on the device: the labelled batch over the
    labelled items (EpochSampler's, mapped to data-set indices) and U unlabelled items per
    step, shuffled once per epoch (one epoch = one pass over them); row B + u*C + y pools
    m ~ Uniform{1..min(m_max, k)} items of class y's segment. sample -> (idx, P [R, B], uidx)."""

    def __init__(self, y, labelled, unlabelled, C: int, k: int, m_max: int, U: int):
        self.labelled = jnp.asarray(labelled.astype(np.int32))
        self.unlabelled = jnp.asarray(unlabelled.astype(np.int32))
        self.C, self.k, self.U = C, k, U
        self.spe = len(unlabelled) // U
        self.inner = EpochSampler(common.ClassTable(y[labelled], C, k), k, m_max, self.spe)
        self.m_max_u = min(m_max, k)
        segment = np.tile(np.arange(C), U)
        self.seg_onehot = jnp.asarray((segment[:, None] == np.arange(C)[None, :])
                                      .astype(np.float32))                      # [U*C, C]

    def new_epoch(self, key):
        k_l, k_u = jax.random.split(key)
        return self.inner.new_epoch(k_l), jax.random.permutation(k_u, self.unlabelled)

    def sample(self, key, state, s):
        perm, order = state
        k_l, k_m, k_sel = jax.random.split(key, 3)
        idx, P = self.inner.sample(k_l, perm, s)
        uidx = lax.dynamic_slice(order, (s * self.U,), (self.U,))
        w = pool_weights(k_m, k_sel, self.U * self.C, self.k, self.m_max_u)
        return self.labelled[idx], jnp.concatenate([P, segment_rows(w, self.seg_onehot)]), uidx


# --- driver -------------------------------------------------------------------------------

def run(args, init_params, loss_fn, x_np, y_np, extra: dict, log_prior: float = 0.0,
        host_sampler=None, epoch_sampler=None):
    """Trains the model on x_np [N, D] float32 / y_np [N] in the chosen mode, prints the JSON
    line. extra: fields for the JSON line; log_prior: added to the reported ELBO; host_sampler
    and epoch_sampler (the semi-supervised model's, both or neither): batches on the host for
    step mode and on the device for epoch mode, the arrays loss_fn(params, X, *batch, eps)
    takes (it then gathers its rows itself)."""
    if host_sampler is not None and args.mode == "step" and (args.sampler or "host") != "host":
        sys.exit("this model samples its step-mode batches on the host only (--sampler host)")
    args.warmup = max(1, args.warmup)   # the first step (compilation) is never timed
    if args.precision != "default":
        jax.config.update("jax_default_matmul_precision", args.precision)
    if args.device == "cuda" and jax.default_backend() != "gpu":
        sys.exit(f"--device cuda: jax backend is {jax.default_backend()}")
    N = len(y_np)
    B = args.classes * args.k
    spe = N // B
    table = common.ClassTable(y_np, args.classes, args.k)
    X = jax.device_put(jnp.asarray(x_np))
    sampler_kind = "device" if args.mode == "epoch" else (args.sampler or "host")
    train_step = make_train_step(loss_fn, args.lr, args.d_v, host_sampler is not None)

    key = jax.random.PRNGKey(args.seed)
    k_init, k_run = jax.random.split(key)
    params = init_params(k_init)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params),
             jnp.zeros((), jnp.float32), k_run)
    # Batches drawn on the device (epoch mode, or step mode with --sampler device).
    device_sampler = epoch_sampler or EpochSampler(table, args.k, args.m_max, spe)

    def sync(x):
        jax.block_until_ready(x)

    losses = []
    if args.mode == "step":
        if sampler_kind == "host":
            hs = host_sampler or common.HostSampler(table, args.k, args.m_max, spe, args.seed)
            jstep = jax.jit(train_step, donate_argnums=(0,))

            def step(state, i):
                return jstep(state, X, *hs.sample())
        else:
            jperm = jax.jit(device_sampler.new_epoch)

            def _dev_step(st, X_, perm, s):
                params_, m_, v_, t_, key_ = st
                key_, k_s = jax.random.split(key_)
                batch = device_sampler.sample(k_s, perm, s)
                return train_step((params_, m_, v_, t_, key_), X_, *batch)

            jstep = jax.jit(_dev_step, donate_argnums=(0,))
            perm_key = [jax.random.PRNGKey(args.seed + 1)]
            perm_box = [None]

            def step(state, i):
                s = i % spe
                if s == 0:
                    perm_key[0], kp = jax.random.split(perm_key[0])
                    perm_box[0] = jperm(kp)
                return jstep(state, X, perm_box[0], np.int32(s))

        common.log(args, f"[jax {jax.__version__}] mode=step backend={jax.default_backend()} "
                         f"threads={args.threads} N={N} B={B} steps/epoch={spe} "
                         f"sampler={sampler_kind}")
        i = 0
        t0 = time.perf_counter()
        state, loss = step(state, i)
        i += 1
        losses.append(loss)
        sync(state)
        first_step_s = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            state, loss = step(state, i)
            i += 1
            losses.append(loss)
        sync(state)
        per_window, total, done = [], 0.0, 0
        while done < args.steps:
            n = min(args.window, args.steps - done)
            t0 = common.now_ms()
            for _ in range(n):
                state, loss = step(state, i)
                i += 1
                losses.append(loss)
            sync(state)
            dt = common.now_ms() - t0
            per_window.append(dt / n)
            total += dt
            done += n
        timed_steps = args.steps
        loss_vals = np.asarray(jnp.stack(losses)).tolist()
    else:
        spe = device_sampler.spe

        def run_epoch(st, X_):
            params_, m_, v_, t_, key_ = st
            key_, k_epoch, k_loop = jax.random.split(key_, 3)
            epoch_state = device_sampler.new_epoch(k_epoch)

            def body(carry, s):
                p_, mm, vv, tt, kk = carry
                kk, k_s = jax.random.split(kk)
                batch = device_sampler.sample(k_s, epoch_state, s)
                return train_step((p_, mm, vv, tt, kk), X_, *batch)

            carry, ls = lax.scan(body, (params_, m_, v_, t_, k_loop),
                                 jnp.arange(spe, dtype=jnp.int32))
            p_, mm, vv, tt, _ = carry
            return (p_, mm, vv, tt, key_), ls

        jepoch = jax.jit(run_epoch, donate_argnums=(0,))
        warm_epochs = max(1, math.ceil(args.warmup / spe))
        timed_epochs = max(1, math.ceil(args.steps / spe))
        common.log(args, f"[jax {jax.__version__}] mode=epoch backend={jax.default_backend()} "
                         f"threads={args.threads} N={N} B={B} steps/epoch={spe} "
                         f"warmup epochs={warm_epochs} timed epochs={timed_epochs}")
        t0 = time.perf_counter()
        state, ls = jepoch(state, X)
        sync(state)
        first_step_s = time.perf_counter() - t0   # first epoch, includes compilation
        losses.append(ls)
        for _ in range(warm_epochs - 1):
            state, ls = jepoch(state, X)
            losses.append(ls)
        sync(state)
        per_window, total = [], 0.0
        for _ in range(timed_epochs):
            t0 = common.now_ms()
            state, ls = jepoch(state, X)
            sync(state)
            dt = common.now_ms() - t0
            per_window.append(dt / spe)
            total += dt
            losses.append(ls)
        timed_steps = timed_epochs * spe
        loss_vals = np.asarray(jnp.concatenate(losses)).tolist()
        args.warmup = warm_epochs * spe

    res = common.summarise(args, "jax", args.mode, per_window, total, timed_steps, loss_vals, {
        "sampler": sampler_kind,
        "sampling_timed": True,
        "pooling": "dense [B,B] matmul",
        "matmul": args.precision,
        "adam": "hand-written, inside the jit",
        "first_step_s": round(first_step_s, 3),
        "n_train": N,
        "framework": f"jax {jax.__version__}",
        **extra,
    }, log_prior)
    if args.mode == "epoch":
        res["steps_per_epoch"] = spe
    common.log(args, f"elbo first {res['elbo_first']:.2f} -> last {res['elbo_last']:.2f}; "
                     f"{res['ms_per_step_median']:.3f} ms/step median")
    common.emit(res)
