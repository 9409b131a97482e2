#!/usr/bin/env python3
"""EquiVAE training step in PyTorch: the peer for side-by-side speed ratios.

Same model, batch construction and optimiser as the engine (README, "The model"):
f_inv 784-512-512-16, encoder [x; r] 800-512-512-32 (mu, log sigma^2),
decoder [r; v] 32-512-512-784 logits, Bernoulli soft-target likelihood,
KL to N(0, I), loss = -mean ELBO, Adam(1e-3, (0.9, 0.999), 1e-8),
nn.Linear default init. The encoder's first layer is W_x x + W_r r + b, as the
engine computes it (the same function and init as one layer over [x; r]): the
backward then forms r's 16 input-gradient columns, not [x; r]'s 800, and the
semi-supervised step takes W_x x once per item rather than once per label row.
Leave-one-out pooling r = P @ f_inv(x) with a dense [B, B] pooling matrix (see
common.py). Modes, timing: torch_driver.py (--mode eager | compile |
compile-cudagraphs).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import torch_driver  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class EquiVAE(nn.Module):
    def __init__(self, d_x=784, H=512, d_r=16, d_v=16):
        super().__init__()
        self.d_v = d_v
        self.f_inv = nn.Sequential(nn.Linear(d_x, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                   nn.Linear(H, d_r))
        # The encoder's first layer over [x; r], in two parts initialised as the one layer
        # (U(+-1/sqrt(d_x + d_r)) for weights and bias).
        self.enc_x = nn.Linear(d_x, H)
        self.enc_r = nn.Linear(d_r, H, bias=False)
        bound = 1.0 / (d_x + d_r) ** 0.5
        for t in (self.enc_x.weight, self.enc_x.bias, self.enc_r.weight):
            nn.init.uniform_(t, -bound, bound)
        self.enc = nn.Sequential(nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 2 * d_v))
        self.dec = nn.Sequential(nn.Linear(d_r + d_v, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                 nn.Linear(H, d_x))

    def forward(self, X, idx, P):
        """X [N, 784] data set, idx [B] rows, P [B, B] pooling matrix -> loss (scalar)."""
        x = X[idx]                                    # gather the batch          [B, 784]
        e = self.f_inv(x)                             # invariant embeddings      [B, d_r]
        r = P @ e                                     # leave-one-out pooling     [B, d_r]
        h = self.enc(self.enc_x(x) + self.enc_r(r))   # q(v | r, x)               [B, 2 d_v]
        mu, logvar = h[:, :self.d_v], h[:, self.d_v:]
        eps = torch.randn_like(mu)
        v = mu + torch.exp(0.5 * logvar) * eps        # reparameterised sample    [B, d_v]
        logits = self.dec(torch.cat([r, v], dim=1))   # p(x | r, v)               [B, 784]
        ll = (x * logits - F.softplus(logits)).sum(dim=1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
        return -(ll - kl).mean()


class SemiSupervisedEquiVAE(EquiVAE):
    """EquiVAE with q(y|x) (784-512-512-C) and the unlabelled items' bound, as the engine's
    semi-supervised step: the labelled rows' -ELBO, alpha * their -log q(y|x), and per
    unlabelled item L = sum_y q_y (ELBO_y + log p(y) - log q_y), each item's C rows pooling
    from class y's segment (P [R, B], R = B + U*C); loss = mean_B(-ELBO) + alpha
    mean_B(-log q) - w mean_U(L)."""

    def __init__(self, d_x=784, H=512, d_r=8, d_v=8, C=10, alpha=1.0, w=1.0):
        super().__init__(d_x, H, d_r, d_v)
        self.C, self.alpha, self.w = C, alpha, w
        self.cls = nn.Sequential(nn.Linear(d_x, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                 nn.Linear(H, C))
        self.log_prior = -float(torch.log(torch.tensor(float(C))))  # a class-balanced p(y)

    def forward(self, X, idx, P, uidx):
        B, U, C = idx.shape[0], uidx.shape[0], self.C
        x_l, x_u = X[idx], X[uidx]                    # [B, 784], [U, 784]
        e = self.f_inv(x_l)                           # [B, d_r]
        r = P @ e                                     # [R, d_r]
        x = torch.cat([x_l, x_u.repeat_interleave(C, dim=0)])                # [R, 784]
        # W_x x once per item, copied to its C label rows                    [R, H]
        a_x = self.enc_x(torch.cat([x_l, x_u]))
        a_x = torch.cat([a_x[:B], a_x[B:].repeat_interleave(C, dim=0)])
        h = self.enc(a_x + self.enc_r(r))
        mu, logvar = h[:, :self.d_v], h[:, self.d_v:]
        v = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.dec(torch.cat([r, v], dim=1))   # [R, 784]
        ll = (x * logits - F.softplus(logits)).sum(dim=1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
        q_logits = self.cls(torch.cat([x_l, x_u]))   # [B + U, C]
        labels = torch.arange(B, device=X.device) // (B // C)   # segment c holds class c
        nll = F.cross_entropy(q_logits[:B], labels)
        log_q = F.log_softmax(q_logits[B:], dim=1)   # [U, C]
        elbo_u = (ll[B:] - kl[B:]).reshape(U, C)
        bound = (log_q.exp() * (elbo_u + self.log_prior - log_q)).sum(dim=1)
        return -(ll[:B] - kl[:B]).mean() + self.alpha * nll - self.w * bound.mean()


def main():
    p = torch_driver.add_flags(common.common_parser(__doc__.split("\n")[0]))
    args = p.parse_args()
    torch_driver.setup(args)
    x_np, y_np = common.load_data(args)
    if args.unlabelled > 0:
        labelled, unlabelled = common.semi_split(y_np, args.classes, args.labels)
        model = SemiSupervisedEquiVAE(784, args.hidden, args.d_r, args.d_v, args.classes)
        sampler = common.HostSemiSampler(y_np, labelled, unlabelled, args.classes, args.k,
                                         args.m_max, args.unlabelled, args.seed)
        torch_driver.run(args, model, x_np, y_np, {"model": "mnist-dense-semi",
                                                   "unlabelled": args.unlabelled,
                                                   "labels": len(labelled)},
                         host_sampler=sampler)
    else:
        model = EquiVAE(784, args.hidden, args.d_r, args.d_v)
        torch_driver.run(args, model, x_np, y_np, {"model": "mnist-dense"})


if __name__ == "__main__":
    main()
