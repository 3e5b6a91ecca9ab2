#!/usr/bin/env python3
"""Makes testdata/hostile/*.pt: TorchScript comparators whose output has a
shape or values no comparator may have, for the tests of hostile input.

Run once with PyTorch (Debian: apt-get install python3-torch):
    /usr/bin/python3 scripts/make_hostile_torchscript.py testdata/hostile
"""
import os
import sys

import torch
import torch.nn as nn


class Scalar(nn.Module):
    def forward(self, x):
        return x.mean()


class WrongBatch(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 0)


class Empty(nn.Module):
    def forward(self, x):
        return x[:, :0]


class NotFinite(nn.Module):
    def forward(self, x):
        return x / 0.0


out = sys.argv[1]
for name, mod in [("scalar", Scalar()), ("wrong_batch", WrongBatch()), ("empty", Empty()), ("not_finite", NotFinite())]:
    torch.jit.script(mod).save(os.path.join(out, name + ".pt"))
