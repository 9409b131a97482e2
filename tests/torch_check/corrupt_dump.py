#!/usr/bin/env python3
"""Breaks a dump_step dump's first batch the way a faulty sampler or loader would, to show that
check_step.py's batch check catches it: the engine's gradients come from the same batch, so only
that check can.

usage: corrupt_dump.py DIR KIND   (in place; KIND: self-pool, other-class, unscaled)
  self-pool    labelled row 0 pools itself (eq. 2's leave-one-out broken)
  other-class  rows 0 and k swapped: segment 0 holds a digit of class 1, and the other way
  unscaled     row 0's pixels not divided by 255
"""
import os
import sys

import numpy as np


def main():
    dirpath, kind = sys.argv[1], sys.argv[2]
    step = os.path.join(dirpath, "step0")
    if kind == "self-pool":
        offsets = np.load(os.path.join(step, "offsets.npy"))
        members = np.load(os.path.join(step, "members.npy"))
        members[offsets[0]] = 0
        np.save(os.path.join(step, "members.npy"), members)
    elif kind in ("other-class", "unscaled"):
        x = np.load(os.path.join(step, "x.npy"))
        k = int(__import__("json").load(open(os.path.join(dirpath, "meta.json")))["k"])
        if kind == "other-class":
            x[[0, k]] = x[[k, 0]]
        else:
            x[0] *= 255.0
        np.save(os.path.join(step, "x.npy"), x)
    else:
        sys.exit(f"corrupt_dump.py: unknown kind {kind!r} (self-pool, other-class, unscaled)")


if __name__ == "__main__":
    main()
