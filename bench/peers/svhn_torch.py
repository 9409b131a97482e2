#!/usr/bin/env python3
"""SVHN EquiVAE training step in PyTorch: the peer of the engine's conv model.

Same model, batch construction and optimiser as the engine's SVHN model
(model/architecture.h, svhn_config(); w = 32 channels, every conv k4 s2 p1):
  trunk    conv 3->32 (32->16), 32->64 (->8), 64->128 (->4): F = 2048 features
  f_inv    trunk, dense F -> H -> d_r
  q(v|r,x) its own trunk on x, dense [features ; r] -> H -> 2 d_v (mu, log sigma^2)
  p(x|r,v) dense [r ; v] -> H -> F, reshape [128, 4, 4], convT 128->64, 64->32, 32->3: mu
ReLU between layers (after the encoder's trunk too), identity at each end;
Gaussian likelihood log N(x | mu, e^{lv_c}) with a learned per-channel
log-variance lv [3] (starts at 2 log 0.1, as the engine's), both log-variances
clamped to [-30, 20]; loss = -mean(log p(x|r,v) - KL); the reported ELBO adds
log p(y). PyTorch-default init (nn.Linear / nn.Conv2d / nn.ConvTranspose2d),
Adam(1e-3, (0.9, 0.999), 1e-8). Leave-one-out pooling r = P @ f_inv(x),
m ~ U{1..10}. Modes, timing: torch_driver.py (--mode eager | compile |
compile-cudagraphs).
"""
from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import torch_driver  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
INITIAL_SIGMA = 0.1   # the engine's gaussian_initial_sigma
LOG_2PI = math.log(2.0 * math.pi)


def conv_trunk(c: int, w: int) -> list[nn.Module]:
    """[B, c, S, S] -> [B, 4w (S/8)^2], a ReLU after every convolution."""
    return [nn.Conv2d(c, w, 4, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(), nn.Flatten()]


class SvhnEquiVAE(nn.Module):
    def __init__(self, shape=common.SVHN_SHAPE, w=32, H=512, d_r=16, d_v=16):
        super().__init__()
        c, s, _ = shape
        self.shape, self.d_v = shape, d_v
        F = 4 * w * (s // 8) ** 2
        self.f_inv = nn.Sequential(*conv_trunk(c, w), nn.Linear(F, H), nn.ReLU(), nn.Linear(H, d_r))
        self.enc_trunk = nn.Sequential(*conv_trunk(c, w))
        self.enc_head = nn.Sequential(nn.Linear(F + d_r, H), nn.ReLU(), nn.Linear(H, 2 * d_v))
        self.dec = nn.Sequential(
            nn.Linear(d_r + d_v, H), nn.ReLU(), nn.Linear(H, F), nn.ReLU(),
            nn.Unflatten(1, (4 * w, s // 8, s // 8)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, c, 4, 2, 1))
        self.logvar = nn.Parameter(torch.full((c,), 2.0 * math.log(INITIAL_SIGMA)))   # [C]

    def forward(self, X, idx, P):
        """X [N, 3072] data set, idx [B] rows, P [B, B] pooling matrix -> loss (scalar)."""
        x = X[idx].view(-1, *self.shape)               # gather the batch        [B, 3, 32, 32]
        e = self.f_inv(x)                              # invariant embeddings    [B, d_r]
        r = P @ e                                      # leave-one-out pooling   [B, d_r]
        h = self.enc_head(torch.cat([self.enc_trunk(x), r], dim=1))   # q(v|r,x) [B, 2 d_v]
        mu = h[:, :self.d_v]
        logvar = h[:, self.d_v:].clamp(LOGVAR_MIN, LOGVAR_MAX)
        eps = torch.randn_like(mu)
        v = mu + torch.exp(0.5 * logvar) * eps         # reparameterised sample  [B, d_v]
        mean = self.dec(torch.cat([r, v], dim=1))      # p(x | r, v): mu         [B, 3, 32, 32]
        lv = self.logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)  # [C]
        sq = (x - mean).square().flatten(2).sum(dim=2)  # per channel            [B, C]
        pixels = x[0, 0].numel()
        ll = -0.5 * (pixels * (LOG_2PI + lv) + sq * torch.exp(-lv)).sum(dim=1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
        return -(ll - kl).mean()


def main():
    p = torch_driver.add_flags(common.common_parser(__doc__.split("\n")[0], svhn=True))
    args = p.parse_args()
    torch_driver.setup(args)
    x_np, y_np, source = common.load_svhn(args)
    model = SvhnEquiVAE(common.SVHN_SHAPE, 32, args.hidden, args.d_r, args.d_v)
    log_prior = common.mean_log_prior(y_np, args.classes)
    torch_driver.run(args, model, x_np, y_np,
                     {"model": "svhn-conv", "data": source, "log_prior": round(log_prior, 4)},
                     log_prior)


if __name__ == "__main__":
    main()
