#!/usr/bin/env python3
"""deepsim's training step written in PyTorch eager: the same networks
(graphs/trained.h), the same DeePSiM loss and balancing (graphs/model.hpp).
runner's BenchmarkPeer drives it, in each of its formulations:

    transposed  nn.ConvTranspose2d for the up-convolutions, NCHW, float32:
                the step as users write it
    subpixel    each up-convolution as one 2x2 convolution to 4x channels
                and an interleave of the four phases (the same function),
                D's convolutions run once on the real and the fake batch
                together, and leaky ReLU in place, NCHW, float32: the
                fastest known eager formulation
    subpixel-cl the same in channels-last
    subpixel-bf16 the same under bfloat16 autocast, in the layout that
                is faster (--layout)

    step mode: peer.py step CHECKPOINT COMPARATOR BATCHES.npy THREADS
               [--lambda-adv W] [--form F] [--layout nchw|cl] [--bf16]
    Reads the initial weights (a deepsim checkpoint) and the batches, then
    for each line "step" on stdin runs one training step on the next batch
    and prints "seconds loss_feat loss_adv loss_img loss_discr".

    flops mode: peer.py flops CHECKPOINT COMPARATOR BATCHES.npy
    The floating-point operations of one step (with both updates), counted
    at the dispatcher: every convolution, its backward and every matrix
    product as they run. Prints the count.

    peak mode:  peer.py peak THREADS
    The fastest 3x3 convolution here: GFLOP/s of oneDNN's forward
    convolution over a few of the step's shapes, in both layouts. Prints
    the best and the shape and layout that gave it.

    e2e mode:  peer.py e2e COMPARATOR PHOTO_DIR THREADS BATCH STEPS
    The standard recipe end to end: ImageFolder-style PIL decoding,
    RandomResizedCrop and flip in a DataLoader with 2 workers; prints the
    images per second over the steps after the first few.
"""
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LEAK = 0.3
SIZE, CODE = 64, 8


def conv(i, o, k, stride=1, pad=None):
    return nn.Conv2d(i, o, k, stride=stride, padding=k // 2 if pad is None else pad)


def leaky(inplace=False):
    return nn.LeakyReLU(LEAK, inplace=inplace)


def stages(size):
    n = 0
    while (8 << n) < size:
        n += 1
    return n


class Encoder(nn.Module):
    def __init__(self, size, code, inplace=False):
        super().__init__()
        layers, i, ch = [], 3, 32
        for _ in range(stages(size)):
            layers += [conv(i, ch, 4, 2, 1), leaky(inplace), conv(ch, ch, 3), leaky(inplace)]
            i, ch = ch, min(ch * 2, 256)
        layers.append(conv(i, code, 3))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class SubPixelUp(nn.Module):
    """ConvTranspose2d(i, o, 4, stride=2, padding=1) with its parameters,
    computed as one 2x2 convolution (padding 1) to 4x channels: output pixel
    (2r+a, 2c+b) is group (a, b)'s window starting at (a, b)."""

    def __init__(self, i, o):
        super().__init__()
        t = nn.ConvTranspose2d(i, o, 4, stride=2, padding=1)
        self.weight, self.bias = t.weight, t.bias

    def forward(self, x):
        i, o = self.weight.shape[:2]
        n, _, h, w = x.shape
        k = self.weight.flip(2, 3).view(i, o, 2, 2, 2, 2).permute(3, 5, 1, 0, 2, 4).reshape(4 * o, i, 2, 2)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        y = F.conv2d(x, k.contiguous(memory_format=fmt), self.bias.repeat(4), padding=1).view(n, 2, 2, o, h + 1, w + 1)
        p = [[y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)] for a in (0, 1)]
        y = torch.stack([torch.stack(p[a], -1) for a in (0, 1)], 3).reshape(n, o, 2 * h, 2 * w)
        return y.contiguous(memory_format=fmt)


class Generator(nn.Module):
    def __init__(self, size, code, up=None, inplace=False):
        super().__init__()
        n = stages(size)
        ch = min(32 << n, 512)
        layers = [conv(code, ch, 3), leaky(inplace)]
        for _ in range(n):
            out = max(ch // 2, 32)
            upconv = up(ch, out) if up else nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1)
            layers += [upconv, leaky(inplace), conv(out, out, 3), leaky(inplace)]
            ch = out
        layers.append(conv(ch, 3, 3))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(self, size, inplace=False):
        super().__init__()
        s1 = max(1, min(size // 16, 4))
        act = lambda: leaky(inplace)  # noqa: E731
        self.features = nn.Sequential(conv(3, 32, 7, s1), act(), conv(32, 64, 5), act(),
                                      conv(64, 128, 3, 2), act(), conv(128, 256, 3), act(),
                                      conv(256, 256, 3, 2), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(256, 256), act(),
                                        nn.Dropout(0.5), nn.Linear(256, 1))

    def forward(self, x):
        return self.classifier(self.features(x)).squeeze(1)

    def forward_pair(self, real, fake):
        """Two forwards, the convolutions run once on both batches."""
        h = self.features(torch.cat([real, fake])).split(real.shape[0])
        return self.classifier(h[0]).squeeze(1), self.classifier(h[1]).squeeze(1)


def exemplar_conv2(path):
    """The shipped Exemplar-CNN cut at conv2; it takes [-1,1] as trained."""
    f = nn.Sequential(conv(3, 32, 5), nn.ReLU(), nn.MaxPool2d(2, 2), conv(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2, 2))
    sd = torch.load(path, map_location="cpu")
    f.load_state_dict({k[len("features."):]: v for k, v in sd.items() if k[len("features."):] in f.state_dict()})
    f.eval()
    for p in f.parameters():
        p.requires_grad_(False)
    return f


class DeePSiM:
    def __init__(self, comparator, w_feat=1.0, w_adv=0.01, w_img=1.0, form="transposed", layout="nchw", bf16=False):
        up = SubPixelUp if form == "subpixel" else None
        # The fastest formulations also run D once on real and fake together,
        # and apply leaky ReLU in place.
        fast = self.paired = form == "subpixel"
        self.E, self.G, self.D = Encoder(SIZE, CODE, fast), Generator(SIZE, CODE, up, fast), Discriminator(SIZE, fast)
        self.fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
        self.bf16 = bf16
        self.C = comparator
        self.w_feat, self.w_adv, self.w_img = w_feat, w_adv, w_img
        adam = dict(lr=2e-4, betas=(0.9, 0.999), weight_decay=4e-4)
        self.opt_g = torch.optim.Adam(list(self.E.parameters()) + list(self.G.parameters()), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.train_d, self.train_g = True, True

    def load(self, path):
        sd = torch.load(path, map_location="cpu")
        for prefix, mod in (("encoder.", self.E), ("generator.", self.G), ("discriminator.", self.D)):
            mod.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
            mod.to(memory_format=self.fmt)

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def step(self, x):
        self.E.train(), self.G.train(), self.D.train()
        x = x.contiguous(memory_format=self.fmt)
        with self.autocast():
            y = self.G(self.E(x))
        zero = torch.zeros(())
        l_img, l_feat, l_adv, l_discr = zero, zero, zero, zero
        g_loss = zero
        if self.w_img > 0:
            with self.autocast():
                l_img = F.mse_loss(y, x)
            g_loss = g_loss + self.w_img * l_img
        if self.w_feat > 0:
            with torch.no_grad():
                t = self.C(x)
            l_feat = F.mse_loss(self.C(y.float()), t)
            g_loss = g_loss + self.w_feat * l_feat
        adversarial = self.w_adv > 0
        update_d, update_g = adversarial and self.train_d, self.train_g
        if adversarial:
            with self.autocast():
                real, fake = self.D.forward_pair(x, y.detach()) if self.paired else (self.D(x), self.D(y.detach()))
                l_discr = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                           + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            if update_d:
                self.opt_d.zero_grad()
                l_discr.backward()
                self.opt_d.step()
            for p in self.D.parameters():
                p.requires_grad_(False)
            with self.autocast():
                judged = self.D(y)
            for p in self.D.parameters():
                p.requires_grad_(True)
            l_adv = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
            g_loss = g_loss + self.w_adv * l_adv
        if update_g:
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()
        losses = [l_feat.item(), l_adv.item(), l_img.item(), l_discr.item()]
        if adversarial:
            r = losses[3] / max(losses[1], 1e-12)
            if self.train_d and r < 0.1:
                self.train_d = False
            elif not self.train_d and r > 0.5:
                self.train_d = True
            self.train_g = not (r > 10)
        return losses


def peer_model(args):
    form = "subpixel" if args.form.startswith("subpixel") else "transposed"
    model = DeePSiM(exemplar_conv2(args.comparator), w_adv=args.lambda_adv, form=form,
                    layout=args.layout, bf16=args.bf16)
    model.load(args.checkpoint)
    return model


def step_mode(args):
    torch.set_num_threads(args.threads)
    model = peer_model(args)
    data = np.load(args.batches)
    for i, line in enumerate(sys.stdin):
        if line.strip() != "step":
            break
        x = torch.from_numpy(data[i % len(data)])
        start = time.perf_counter()
        losses = model.step(x)
        took = time.perf_counter() - start
        print(took, *losses, flush=True)


def conv_flops(x_shape, w_shape, out_shape):
    """Multiply-adds of a convolution, counted as two operations each."""
    n, _, ho, wo = out_shape
    co, ci_per_group, kh, kw = w_shape
    return 2 * n * co * ho * wo * ci_per_group * kh * kw


def flops_mode(args):
    """Counts the FLOPs of one step as the dispatcher runs it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    total = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, a=(), kw=None):
            out = func(*a, **(kw or {}))
            if func is aten.convolution.default:
                total[0] += conv_flops(a[0].shape, a[1].shape, out.shape)
            elif func is aten.convolution_backward.default:
                grad, x, w, mask = a[0], a[1], a[2], a[-1]
                total[0] += conv_flops(x.shape, w.shape, grad.shape) * (int(mask[0]) + int(mask[1]))
            elif func in (aten.mm.default, aten.addmm.default):
                m1, m2 = (a[0], a[1]) if func is aten.mm.default else (a[1], a[2])
                total[0] += 2 * m1.shape[0] * m1.shape[1] * m2.shape[1]
            return out

    torch.set_num_threads(1)
    model = peer_model(args)
    x = torch.from_numpy(np.load(args.batches)[0])
    with Counter():
        model.step(x)
    print(total[0])


def peak_mode(args):
    """oneDNN's fastest forward 3x3 convolution over the step's widths."""
    torch.set_num_threads(args.threads)
    best = (0.0, "")
    # Three rounds of 1 s a shape: the best is the machine's, and a shared
    # machine's neighbours only ever lower a sample.
    with torch.no_grad():
        for _ in range(3):
            for n, c, side in ((16, 64, 32), (16, 128, 16), (16, 256, 8), (16, 32, 64)):
                for name, fmt in (("nchw", torch.contiguous_format), ("channels-last", torch.channels_last)):
                    x = torch.randn(n, c, side, side).contiguous(memory_format=fmt)
                    w = torch.randn(c, c, 3, 3).contiguous(memory_format=fmt)
                    for _ in range(3):
                        F.conv2d(x, w, padding=1)
                    reps, start = 0, time.perf_counter()
                    while time.perf_counter() - start < 1.0:
                        F.conv2d(x, w, padding=1)
                        reps += 1
                    rate = reps * conv_flops(x.shape, w.shape, x.shape) / (time.perf_counter() - start) / 1e9
                    best = max(best, (rate, f"{n}x{c}x{side}x{side} {name}"))
    print(best[0], best[1])


def e2e_mode(comparator, photos, threads, batch, steps):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(threads)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(SIZE, scale=(0.01, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),  # [-1,1]
    ])
    data = datasets.ImageFolder(photos, transform=tf)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                        persistent_workers=True)
    model = DeePSiM(exemplar_conv2(comparator))
    warm, done, start = 3, 0, None
    while done < steps:
        for x, _ in loader:
            model.step(x)
            done += 1
            if done == warm:
                start = time.perf_counter()
            if done == steps:
                break
    print((steps - warm) * batch / (time.perf_counter() - start))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "e2e":
        e2e_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        sys.exit(0)
    import argparse

    ap = argparse.ArgumentParser(description="see the docstring")
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("step", "flops"):
        sp = sub.add_parser(mode)
        sp.add_argument("checkpoint")
        sp.add_argument("comparator")
        sp.add_argument("batches")
        if mode == "step":
            sp.add_argument("threads", type=int)
        sp.add_argument("--lambda-adv", type=float, default=0.01)
        sp.add_argument("--form", default="transposed", choices=["transposed", "subpixel"])
        sp.add_argument("--layout", default="nchw", choices=["nchw", "cl"])
        sp.add_argument("--bf16", action="store_true")
    sp = sub.add_parser("peak")
    sp.add_argument("threads", type=int)
    args = ap.parse_args()
    {"step": step_mode, "flops": flops_mode, "peak": peak_mode}[args.mode](args)
