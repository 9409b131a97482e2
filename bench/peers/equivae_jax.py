#!/usr/bin/env python3
"""EquiVAE training step in JAX: the peer for side-by-side speed ratios.

Same model, batch construction and optimiser as the engine (README, "The model") and
as equivae_torch.py: f_inv 784-512-512-16, encoder [x; r] 800-512-512-32,
decoder [r; v] 32-512-512-784 logits, Bernoulli soft-target likelihood, KL to
N(0, I), loss = -mean ELBO, Adam(1e-3, (0.9, 0.999), 1e-8) written by hand
(same update as torch.optim.Adam), PyTorch-default nn.Linear init
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases). The encoder's first
layer is W_x x + W_r r + b, as the engine and equivae_torch.py compute it (the
same function and init as one layer over [x; r]). Leave-one-out
pooling r = P @ f_inv(x) with a dense [B, B] pooling matrix (see common.py).
Modes (step | epoch) and timing: jax_driver.py. --unlabelled U: the
semi-supervised step (semi_loss_fn; step mode samples on the host, epoch mode
on the device, jax_driver.SemiEpochSampler).

Threads (CPU): PJRT_NPROC / NPROC = --threads (size of the XLA CPU client's
intra-op thread pool) and XLA_FLAGS += --xla_cpu_multi_thread_eigen=true|false
(false when --threads 1); all set in the environment before jax is imported.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

args = common.jax_flags(common.common_parser(__doc__.split("\n")[0])).parse_args()
common.jax_environment(args)   # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax_driver  # noqa: E402


def init_mlp(key, sizes):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        layers.append((jax_driver.uniform(kw, (fan_in, fan_out), fan_in),
                       jax_driver.uniform(kb, (fan_out,), fan_in)))
    return layers


def init_params(key, d_x, H, d_r, d_v):
    k1, k2, k3 = jax.random.split(key, 3)
    enc = init_mlp(k2, [d_x + d_r, H, H, 2 * d_v])
    W, b = enc[0]
    return {
        "f_inv": init_mlp(k1, [d_x, H, H, d_r]),
        # The first layer's rows for x and for r, apart (encoder()).
        "enc_first": (W[:d_x], W[d_x:], b),
        "enc": enc[1:],
        "dec": init_mlp(k3, [d_r + d_v, H, H, d_x]),
    }


def encoder(params, a_x, r):
    """q(v | r, x) from W_x x (a_x [R, H], without the bias) and r [R, d_r] -> [R, 2 d_v]."""
    _, W_r, b = params["enc_first"]
    return mlp(params["enc"], jax.nn.relu(a_x + r @ W_r + b))


def mlp(layers, h):
    for i, (W, b) in enumerate(layers):
        h = h @ W + b
        if i < len(layers) - 1:
            h = jax.nn.relu(h)
    return h


def loss_fn(params, x, P, eps):
    """x [B, 784], P [B, B], eps [B, d_v] -> -mean ELBO."""
    d_v = eps.shape[1]
    e = mlp(params["f_inv"], x)                              # [B, d_r]
    r = P @ e                                                # leave-one-out pooling
    h = encoder(params, x @ params["enc_first"][0], r)     # [B, 2 d_v]
    mu, logvar = h[:, :d_v], h[:, d_v:]
    v = mu + jnp.exp(0.5 * logvar) * eps
    logits = mlp(params["dec"], jnp.concatenate([r, v], axis=1))
    ll = jnp.sum(x * logits - jax.nn.softplus(logits), axis=1)
    kl = 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - 1.0 - logvar, axis=1)
    return -jnp.mean(ll - kl)


def init_semi_params(key, d_x, H, d_r, d_v, C):
    k1, k2 = jax.random.split(key)
    params = init_params(k1, d_x, H, d_r, d_v)
    params["cls"] = init_mlp(k2, [d_x, H, H, C])
    return params


def semi_loss_fn(params, X, idx, P, uidx, eps, alpha=1.0, w=1.0):
    """The semi-supervised step's loss (equivae_torch.SemiSupervisedEquiVAE): idx [B], P [R, B]
    (R = B + U*C), uidx [U], eps [R, d_v]."""
    B, U = idx.shape[0], uidx.shape[0]
    C = (P.shape[0] - B) // U
    d_v = eps.shape[1]
    x_l, x_u = X[idx], X[uidx]
    r = P @ mlp(params["f_inv"], x_l)                                # [R, d_r]
    x = jnp.concatenate([x_l, jnp.repeat(x_u, C, axis=0)])           # [R, 784]
    a_x = jnp.concatenate([x_l, x_u]) @ params["enc_first"][0]       # W_x x once per item
    h = encoder(params, jnp.concatenate([a_x[:B], jnp.repeat(a_x[B:], C, axis=0)]), r)
    mu, logvar = h[:, :d_v], h[:, d_v:]
    v = mu + jnp.exp(0.5 * logvar) * eps
    logits = mlp(params["dec"], jnp.concatenate([r, v], axis=1))
    ll = jnp.sum(x * logits - jax.nn.softplus(logits), axis=1)
    kl = 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - 1.0 - logvar, axis=1)
    q_logits = mlp(params["cls"], jnp.concatenate([x_l, x_u]))       # [B + U, C]
    labels = jnp.arange(B) // (B // C)                               # segment c holds class c
    nll = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(q_logits[:B]), labels[:, None], 1))
    log_q = jax.nn.log_softmax(q_logits[B:])                         # [U, C]
    elbo_u = (ll[B:] - kl[B:]).reshape(U, C)
    bound = jnp.sum(jnp.exp(log_q) * (elbo_u - jnp.log(C) - log_q), axis=1)
    return -jnp.mean(ll[:B] - kl[:B]) + alpha * nll - w * jnp.mean(bound)


def main():
    x_np, y_np = common.load_data(args)
    if args.unlabelled > 0:
        labelled, unlabelled = common.semi_split(y_np, args.classes, args.labels)
        sampler = common.HostSemiSampler(y_np, labelled, unlabelled, args.classes, args.k,
                                         args.m_max, args.unlabelled, args.seed)
        epoch_sampler = jax_driver.SemiEpochSampler(y_np, labelled, unlabelled, args.classes,
                                                    args.k, args.m_max, args.unlabelled)
        jax_driver.run(args, lambda k: init_semi_params(k, 784, args.hidden, args.d_r, args.d_v,
                                                         args.classes),
                       semi_loss_fn, x_np, y_np,
                       {"model": "mnist-dense-semi", "unlabelled": args.unlabelled,
                        "labels": len(labelled)}, host_sampler=sampler,
                       epoch_sampler=epoch_sampler)
    else:
        jax_driver.run(args, lambda k: init_params(k, 784, args.hidden, args.d_r, args.d_v),
                       loss_fn, x_np, y_np, {"model": "mnist-dense"})


if __name__ == "__main__":
    main()
