#!/usr/bin/env python3
"""Teachers for a cost benchmark: one trained teacher and noisy copies of it.

    python bench/perturbed_teachers.py results/tea0 results/bench_teachers \\
        --copies 2 --noise 0.05

Copies the teacher's run folder ``--copies`` times and adds Gaussian noise to
every floating-point tensor of each copy's best checkpoint (standard
deviation ``--noise`` times the tensor's own), then writes
``OUT/teachers.txt``: the teacher's best ``model.ckpt`` and the copies'. The
copies have the teacher's architecture and labels and hypotheses that differ
from its own as an ensemble's do, at the cost of one teacher's training: what
``bench/unlabelled_cost.py`` needs when the machine cannot train three
teachers (the time of a forward pass does not depend on the weights).
"""

import argparse
import os
import shutil
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mtkd.runs import best_checkpoint_model_path  # noqa: E402
from mtkd.teachers import write_teacher_list  # noqa: E402


def perturb(model_ckpt, noise, seed):
    """Adds N(0, (noise * std)^2) to every float tensor of ``model_ckpt``,
    in place (written to a temporary name, then renamed)."""
    generator = torch.Generator().manual_seed(seed)
    state = torch.load(model_ckpt, map_location="cpu", weights_only=True)
    for name, value in state.items():
        if value.is_floating_point() and value.numel() > 1:
            scale = noise * float(value.float().std())
            state[name] = value + scale * torch.randn(
                value.shape, generator=generator, dtype=value.dtype
            )
    torch.save(state, model_ckpt + ".tmp")
    os.replace(model_ckpt + ".tmp", model_ckpt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained teacher's output folder")
    parser.add_argument("out", help="folder for the copies and teachers.txt")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = [os.path.abspath(args.run)]
    for k in range(1, args.copies + 1):
        copy = os.path.abspath(os.path.join(args.out, f"copy{k}"))
        if not os.path.isdir(copy):
            shutil.copytree(args.run, copy + ".tmp")
            model = best_checkpoint_model_path(os.path.join(copy + ".tmp", "save"))
            perturb(model, args.noise, args.seed + k)
            os.replace(copy + ".tmp", copy)
        folders.append(copy)
    listing = os.path.join(args.out, "teachers.txt")
    for line in write_teacher_list(listing, folders, "bench/perturbed_teachers.py"):
        print(line)


if __name__ == "__main__":
    main()
