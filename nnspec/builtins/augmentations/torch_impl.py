"""Augmentations: `fn(args) -> callable(x, generator) -> x`, on whole batches, on x's device.

Every random draw comes from the generator passed in, so a seeded generator reproduces the
batch exactly. Draws are made on the generator's device and moved to x's device, so a CPU
generator works for CUDA batches too. Image augmentations take [N, C, H, W] batches.
Declarations are in nnspec/builtins/augmentations.py.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nnspec.builtins.augmentations.declare import check_augment, crop_room, flip_shape, need_images
from nnspec.errors import DataError
from nnspec.registry.types import TensorType

Augment = Callable[[Tensor, torch.Generator], Tensor]


def _rand(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(like.device)


def _randint(high: int, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(like.device)


def random_flip(args) -> Augment:
    dim = -1 if args.axis == "horizontal" else -2

    def flip(x: Tensor, generator: torch.Generator) -> Tensor:
        flip_shape(args, tuple(x.shape[1:]))
        chosen = _rand(len(x), generator, x) < args.p
        return torch.where(chosen.view((-1,) + (1,) * (x.dim() - 1)), x.flip(dim), x)
    return flip


def random_crop(args) -> Augment:
    height, width = args.size
    pad = args.padding

    def crop(x: Tensor, generator: torch.Generator) -> Tensor:
        h_room, w_room = crop_room(args, tuple(x.shape[1:]))
        n = len(x)
        padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
        top = _randint(h_room + 1, n, generator, x)
        left = _randint(w_room + 1, n, generator, x)
        rows = (top[:, None] + torch.arange(height, device=x.device))[:, None, :, None]   # [N, 1, h, 1]
        cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, None, :]   # [N, 1, 1, w]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]
    return crop


def random_affine(args) -> Augment:
    max_angle = math.radians(args.degrees)
    low, high = args.scale

    def affine(x: Tensor, generator: torch.Generator) -> Tensor:
        need_images("random_affine", tuple(x.shape[1:]))
        n = len(x)
        angle = (_rand(n, generator, x) * 2 - 1) * max_angle
        zoom = low + _rand(n, generator, x) * (high - low)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom     # sampling grid: the inverse map
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return affine


def gaussian_noise(args) -> Augment:
    def noise(x: Tensor, generator: torch.Generator) -> Tensor:
        if args.std == 0:
            return x
        draw = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return x + args.std * draw.to(x.device)
    return noise


def compose_augment(uses: Sequence, input_type: TensorType) -> Augment | None:
    """One callable applying the spec's augmentations in order, after `check_augment` (the rule
    validate runs too) has checked them against the model's input. Raises DataError located at
    the augmentation that does not fit."""
    if not uses:
        return None
    check_augment(uses, input_type)
    steps = [use.component.build(use.args) for use in uses]
    _probe_undeclared(uses, steps, input_type)

    def apply(x: Tensor, generator: torch.Generator) -> Tensor:
        for step in steps:
            x = step(x, generator)
        return x
    return apply


def _probe_undeclared(uses: Sequence, steps: list, input_type: TensorType) -> None:
    """A plugin augmentation that declares no `sample_shape` rule is run once on a batch of zeros,
    so one that changes the sample shape is refused here, located, instead of in the model."""
    want = tuple(input_type.shape)
    for use, step in zip(uses, steps):
        if "sample_shape" in use.component.info:
            continue
        try:
            out = step(torch.zeros((2,) + want), torch.Generator().manual_seed(0))
        except (ValueError, RuntimeError) as err:
            raise DataError(f"augmentation `{use.name}` fails on samples of shape {list(want)}: {err}",
                            span=use.span) from err
        if tuple(out.shape[1:]) != want:
            raise DataError(f"augmentation `{use.name}` turns samples of shape {list(want)} into "
                            f"{list(out.shape[1:])}, but the model input is {list(want)}",
                            "declare `info[\"sample_shape\"]` in the plugin so `nnspec validate` sees it",
                            span=use.span)
