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

from nnspec.registry.types import TensorType

Augment = Callable[[Tensor, torch.Generator], Tensor]


def _rand(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(like.device)


def _randint(high: int, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(like.device)


def _need_images(name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} needs image batches [N, C, H, W], got a batch of shape {list(x.shape)}; "
                         "give the model an input like [1, 8, 8] (e.g. digits(shape = [1, 8, 8]))")


def random_flip(args) -> Augment:
    dim = -1 if args.axis == "horizontal" else -2

    def flip(x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() < (2 if dim == -1 else 3):
            raise ValueError(f"random_flip(axis = {args.axis}) cannot flip a batch of shape {list(x.shape)}; "
                             "give the model an image input like [1, 8, 8]")
        chosen = _rand(len(x), generator, x) < args.p
        return torch.where(chosen.view((-1,) + (1,) * (x.dim() - 1)), x.flip(dim), x)
    return flip


def random_crop(args) -> Augment:
    height, width = args.size
    pad = args.padding

    def crop(x: Tensor, generator: torch.Generator) -> Tensor:
        _need_images("random_crop", x)
        n, _, h, w = x.shape
        h_room, w_room = h + 2 * pad - height, w + 2 * pad - width
        if h_room < 0 or w_room < 0:
            raise ValueError(f"random_crop size [{height}, {width}] is larger than the padded image "
                             f"[{h + 2 * pad}, {w + 2 * pad}]")
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
        _need_images("random_affine", x)
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
    """One callable applying the spec's augmentations in order, checked against the model's
    input by a dry run on a tiny batch. Raises DataError located at the failing augmentation."""
    from nnspec.runtime.data import DataError
    if not uses:
        return None
    if input_type.dtype != "float":
        raise DataError("augmentations need float inputs; this model's input is integer tokens",
                        "remove `augment` from the data block", span=uses[0].span)
    steps = [(use, use.component.build(use.args)) for use in uses]
    probe = torch.zeros((2,) + tuple(input_type.shape))
    gen = torch.Generator().manual_seed(0)
    for use, step in steps:
        try:
            out = step(probe, gen)
        except ValueError as err:
            raise DataError(f"augmentation `{use.name}`: {err}", span=use.span) from err
        if out.shape[1:] != probe.shape[1:]:
            raise DataError(f"augmentation `{use.name}` turns samples of shape {list(probe.shape[1:])} into "
                            f"{list(out.shape[1:])}, but the model input is {list(probe.shape[1:])}",
                            "crop to the image size (pad first for translations), e.g. random_crop(32, padding = 4)",
                            span=use.span)
        probe = out

    def apply(x: Tensor, generator: torch.Generator) -> Tensor:
        for _, step in steps:
            x = step(x, generator)
        return x
    return apply
