#!/usr/bin/env python3
"""Makes testdata/tiny_comparator.pt, the TorchScript comparator the tests load.

Run once with PyTorch (Debian: apt-get install python3-torch):
    /usr/bin/python3 scripts/make_torchscript_testdata.py testdata/tiny_comparator.pt

The module's weights are fixed, so the tests can compute its output by hand:
features = a 1x1 conv that keeps the R and G channels (G doubled), then 4x4
average pooling; forward = flatten(features(x)).
"""
import sys

import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0, 0, 0] = 1.0
            conv.weight[1, 1, 0, 0] = 2.0
            conv.bias.copy_(torch.tensor([0.5, -0.5]))
        self.features = nn.Sequential(conv, nn.AvgPool2d(4))

    def forward(self, x):
        return torch.flatten(self.features(x), 1)


torch.jit.script(Tiny()).save(sys.argv[1])
