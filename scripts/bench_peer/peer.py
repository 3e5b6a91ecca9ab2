#!/usr/bin/env python3
"""deepsim's training step written in PyTorch eager, the way a user would
write it: the same networks (graphs/trained.h), the same DeePSiM loss and
balancing (graphs/model.cpp), nn.ConvTranspose2d for the up-convolutions,
float32, default memory format. runner's BenchmarkPeer drives it.

    step mode: peer.py step CHECKPOINT COMPARATOR BATCHES.npy THREADS
               [--lambda-adv W]
    Reads the initial weights (a deepsim checkpoint) and the batches, then
    for each line "step" on stdin runs one training step on the next batch
    and prints "seconds loss_feat loss_adv loss_img loss_discr".

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


def leaky():
    return nn.LeakyReLU(LEAK)


def stages(size):
    n = 0
    while (8 << n) < size:
        n += 1
    return n


class Encoder(nn.Module):
    def __init__(self, size, code):
        super().__init__()
        layers, i, ch = [], 3, 32
        for _ in range(stages(size)):
            layers += [conv(i, ch, 4, 2, 1), leaky(), conv(ch, ch, 3), leaky()]
            i, ch = ch, min(ch * 2, 256)
        layers.append(conv(i, code, 3))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class Generator(nn.Module):
    def __init__(self, size, code):
        super().__init__()
        n = stages(size)
        ch = min(32 << n, 512)
        layers = [conv(code, ch, 3), leaky()]
        for _ in range(n):
            out = max(ch // 2, 32)
            layers += [nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1), leaky(), conv(out, out, 3), leaky()]
            ch = out
        layers.append(conv(ch, 3, 3))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(self, size):
        super().__init__()
        s1 = max(1, min(size // 16, 4))
        self.features = nn.Sequential(conv(3, 32, 7, s1), leaky(), conv(32, 64, 5), leaky(),
                                      conv(64, 128, 3, 2), leaky(), conv(128, 256, 3), leaky(),
                                      conv(256, 256, 3, 2), leaky(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(256, 256), leaky(),
                                        nn.Dropout(0.5), nn.Linear(256, 1))

    def forward(self, x):
        return self.classifier(self.features(x)).squeeze(1)


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
    def __init__(self, comparator, w_feat=1.0, w_adv=0.01, w_img=1.0):
        self.E, self.G, self.D = Encoder(SIZE, CODE), Generator(SIZE, CODE), Discriminator(SIZE)
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

    def step(self, x):
        self.E.train(), self.G.train(), self.D.train()
        y = self.G(self.E(x))
        zero = torch.zeros(())
        l_img, l_feat, l_adv, l_discr = zero, zero, zero, zero
        g_loss = zero
        if self.w_img > 0:
            l_img = F.mse_loss(y, x)
            g_loss = g_loss + self.w_img * l_img
        if self.w_feat > 0:
            with torch.no_grad():
                t = self.C(x)
            l_feat = F.mse_loss(self.C(y), t)
            g_loss = g_loss + self.w_feat * l_feat
        adversarial = self.w_adv > 0
        update_d, update_g = adversarial and self.train_d, self.train_g
        if adversarial:
            real, fake = self.D(x), self.D(y.detach())
            l_discr = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                       + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            if update_d:
                self.opt_d.zero_grad()
                l_discr.backward()
                self.opt_d.step()
            for p in self.D.parameters():
                p.requires_grad_(False)
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


def step_mode(ckpt, comparator, batches, threads, w_adv):
    torch.set_num_threads(threads)
    model = DeePSiM(exemplar_conv2(comparator), w_adv=w_adv)
    model.load(ckpt)
    data = np.load(batches)
    for i, line in enumerate(sys.stdin):
        if line.strip() != "step":
            break
        x = torch.from_numpy(data[i % len(data)])
        start = time.perf_counter()
        losses = model.step(x)
        took = time.perf_counter() - start
        print(took, *losses, flush=True)


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
    mode = sys.argv[1]
    if mode == "step":
        w_adv = 0.01
        if len(sys.argv) > 7 and sys.argv[6] == "--lambda-adv":
            w_adv = float(sys.argv[7])
        step_mode(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), w_adv)
    elif mode == "e2e":
        e2e_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit("usage: see the docstring")
