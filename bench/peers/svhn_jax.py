#!/usr/bin/env python3
"""SVHN EquiVAE training step in JAX: the peer of the engine's conv model.

The same model, batch construction and optimiser as svhn_torch.py (its
docstring has the layers): conv trunks k4 s2 p1 (3->32->64->128 channels,
32->16->8->4), f_inv F = 2048 -> 512 -> 16, encoder [features ; r] -> 512 -> 32,
decoder [r ; v] -> 512 -> 2048 -> transposed convs 128->64->32->3 (mu), the
Gaussian likelihood with a learned per-channel log-variance (starts at
2 log 0.1), log-variances clamped to [-30, 20], the reported ELBO with
log p(y). Parameters in PyTorch's layouts (conv [out, in, kh, kw],
transposed [in, out, kh, kw], dense [in, out]) with PyTorch's default init
U(+-1/sqrt(fan_in)) (fan_in = in*kh*kw; out*kh*kw for the transpose, as torch
computes it). The convolutions run channels-last (NHWC activations, HWIO
kernels transposed from those layouts inside the jit; the transpose as a
stride-1 convolution of the 2-dilated input with the flipped kernel), the
layout XLA's CPU convolutions prefer; the dense layers see the features in
the engine's (C, H, W) order. On the CPU the epoch mode (a lax.scan) runs
~15x slower per step than the step mode: XLA leaves the weight-gradient
convolution inside a loop body off its fast path (docs/performance-cpu.md). Modes
(step | epoch), timing and Adam: jax_driver.py.
"""
from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

args = common.jax_flags(common.common_parser(__doc__.split("\n")[0], svhn=True)).parse_args()
common.jax_environment(args)   # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
import jax_driver  # noqa: E402

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
INITIAL_SIGMA = 0.1   # the engine's gaussian_initial_sigma
LOG_2PI = math.log(2.0 * math.pi)
DN = ("NHWC", "HWIO", "NHWC")   # channels last
WIDTH = 32            # trunk channels WIDTH, 2 WIDTH, 4 WIDTH


def init_layers(key, shapes):
    """shapes: (weight shape, fan_in, bias size) per layer -> [(W, b)]."""
    layers = []
    for w_shape, fan_in, bias in shapes:
        key, kw, kb = jax.random.split(key, 3)
        layers.append((jax_driver.uniform(kw, w_shape, fan_in),
                       jax_driver.uniform(kb, (bias,), fan_in)))
    return layers


def conv_shapes(c, w):
    """Trunk convs: weight [out, in, 4, 4], fan_in in*16."""
    chans = [c, w, 2 * w, 4 * w]
    return [((o, i, 4, 4), i * 16, o) for i, o in zip(chans[:-1], chans[1:])]


def dense_shapes(widths):
    return [((i, o), i, o) for i, o in zip(widths[:-1], widths[1:])]


def init_params(key, shape, w, H, d_r, d_v):
    c, s, _ = shape
    F = 4 * w * (s // 8) ** 2
    chans = [4 * w, 2 * w, w, c]
    convt = [((i, o, 4, 4), o * 16, o) for i, o in zip(chans[:-1], chans[1:])]  # [in, out, 4, 4]
    ks = jax.random.split(key, 7)
    return {
        "f_inv": {"conv": init_layers(ks[0], conv_shapes(c, w)),
                  "dense": init_layers(ks[1], dense_shapes([F, H, d_r]))},
        "enc": {"conv": init_layers(ks[2], conv_shapes(c, w)),
                "dense": init_layers(ks[3], dense_shapes([F + d_r, H, 2 * d_v]))},
        "dec": {"dense": init_layers(ks[4], dense_shapes([d_r + d_v, H, F])),
                "convt": init_layers(ks[5], convt)},
        "logvar": jnp.full((c,), 2.0 * math.log(INITIAL_SIGMA), jnp.float32),   # [C]
    }


def conv(x, W, b):
    """x [B, S, S, in] (NHWC), W [out, in, 4, 4] -> [B, S/2, S/2, out] (stride 2, padding 1)."""
    y = lax.conv_general_dilated(x, W.transpose(2, 3, 1, 0), (2, 2), ((1, 1), (1, 1)),
                                 dimension_numbers=DN)
    return y + b


def conv_t(x, W, b):
    """x [B, S, S, in] (NHWC), W [in, out, 4, 4] -> [B, 2S, 2S, out]: PyTorch's
    ConvTranspose2d(4, 2, 1) = a stride-1 conv of the 2-dilated input, padding 4 - 1 - 1,
    the kernel flipped (HWIO with I = in, O = out)."""
    Wf = jnp.flip(W, (2, 3)).transpose(2, 3, 0, 1)                      # [4, 4, in, out]
    y = lax.conv_general_dilated(x, Wf, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                 dimension_numbers=DN)
    return y + b


def trunk(layers, x):
    """[B, S, S, C] -> [B, F] in the engine's (C, H, W) feature order, ReLU after every conv."""
    for W, b in layers:
        x = jax.nn.relu(conv(x, W, b))
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


def dense(layers, h, final_relu=False):
    for i, (W, b) in enumerate(layers):
        h = h @ W + b
        if final_relu or i < len(layers) - 1:
            h = jax.nn.relu(h)
    return h


def loss_fn(params, x_flat, P, eps):
    """x_flat [B, 3072] (NCHW rows), P [B, B], eps [B, d_v] -> -mean(log p(x|r,v) - KL)."""
    d_v = eps.shape[1]
    x = x_flat.reshape(-1, *common.SVHN_SHAPE).transpose(0, 2, 3, 1)   # [B, 32, 32, 3]
    e = dense(params["f_inv"]["dense"], trunk(params["f_inv"]["conv"], x))   # [B, d_r]
    r = P @ e                                                            # leave-one-out pooling
    feat = trunk(params["enc"]["conv"], x)                               # [B, F]
    h = dense(params["enc"]["dense"], jnp.concatenate([feat, r], axis=1))    # [B, 2 d_v]
    mu = h[:, :d_v]
    logvar = jnp.clip(h[:, d_v:], LOGVAR_MIN, LOGVAR_MAX)
    v = mu + jnp.exp(0.5 * logvar) * eps
    g = dense(params["dec"]["dense"], jnp.concatenate([r, v], axis=1), final_relu=True)  # [B, F]
    convt = params["dec"]["convt"]
    s8 = x.shape[1] // 8
    g = g.reshape(g.shape[0], convt[0][0].shape[0], s8, s8).transpose(0, 2, 3, 1)  # [B, 4, 4, 4w]
    for i, (W, b) in enumerate(convt):
        g = conv_t(g, W, b)
        if i < len(convt) - 1:
            g = jax.nn.relu(g)
    lv = jnp.clip(params["logvar"], LOGVAR_MIN, LOGVAR_MAX)            # [C]
    sq = jnp.sum(jnp.square(x - g), axis=(1, 2))                        # per channel [B, C]
    pixels = x.shape[1] * x.shape[2]
    ll = -0.5 * jnp.sum(pixels * (LOG_2PI + lv) + sq * jnp.exp(-lv), axis=1)
    kl = 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - 1.0 - logvar, axis=1)
    return -jnp.mean(ll - kl)


def main():
    x_np, y_np, source = common.load_svhn(args)
    log_prior = common.mean_log_prior(y_np, args.classes)
    jax_driver.run(args,
                   lambda k: init_params(k, common.SVHN_SHAPE, WIDTH, args.hidden, args.d_r,
                                         args.d_v),
                   loss_fn, x_np, y_np,
                   {"model": "svhn-conv", "data": source, "log_prior": round(log_prior, 4)},
                   log_prior)


if __name__ == "__main__":
    main()
