"""Writes a TorchScript MLP for bench/vs-ddp: 64 features -> hidden layers (ReLU) -> 10 logits.

Both sides of the benchmark load this one file: anyk through `anyk local --model FILE` (tch
CModule, parameters sorted by name) and the DDP script through torch.jit.load, so they start
from the same architecture and the same initial weights (torch's default Linear init, seeded).

Usage: make_model.py OUT.pt 64 512 512 10 [--seed S]
Prints the parameter count.
"""
import argparse

import torch
from torch import nn


def mlp(widths):
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("widths", type=int, nargs="+")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    model = torch.jit.script(mlp(a.widths))
    model.save(a.out)
    print(sum(t.numel() for t in model.parameters()))


if __name__ == "__main__":
    main()
