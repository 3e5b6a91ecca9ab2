#!/usr/bin/env python3
"""The loader users run, for make bench-data: torchvision's ImageFolder
(PIL decoding), RandomResizedCrop(SIZE) and a horizontal flip, ToTensor,
in a DataLoader with WORKERS processes and shuffling.

    loader.py ROOT WORKERS SIZE SECONDS

Prints the crops per second delivered over SECONDS, after the first
batches (workers starting, the folder scan) are left out.
"""
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def main():
    root, workers, size, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    torch.set_num_threads(1)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])
    ds = datasets.ImageFolder(root, transform=tf)
    dl = DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, persistent_workers=True, prefetch_factor=4)
    it = iter(dl)
    for _ in range(2 * workers):  # warm-up: every worker has started
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, _ = next(it)
        n += x.shape[0]
    print(n / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
