"""Built-in augmentation declarations. Never import torch here: `nnspec validate` reads these.

Implementations live in nnspec/runtime/augment.py: `fn(args) -> callable(x, generator) -> x`,
applied to whole training batches on their device (image batches are [N, C, H, W]).
"""
from __future__ import annotations

from nnspec.registry.catalog import Component
from nnspec.registry.types import ArgError, Choice, Float, NonNegativeInt, Param, PositiveFloat, PositiveInt, Tuple

IMPL = "nnspec.builtins.augmentations.torch_impl:"

random_flip = Component(
    "random_flip", "augmentations",
    params=(Param("p", Float(0, 1), 0.5, doc="probability that a sample is flipped (0 ≤ p ≤ 1)"),
            Param("axis", Choice("horizontal", "vertical"), "horizontal",
                  doc="horizontal mirrors left-right (the last axis), vertical up-down (the one before)")),
    summary="Mirror each sample with probability p.",
    impl=IMPL + "random_flip")

random_crop = Component(
    "random_crop", "augmentations",
    params=(Param("size", Tuple(PositiveInt, 2), doc="output height and width; one number means a square"),
            Param("padding", NonNegativeInt, 0, doc="zeros added on every side before cropping (≥ 0)")),
    summary="Pad each image, then crop it back to `size` at a random offset per sample.",
    impl=IMPL + "random_crop")


def _check_affine(args) -> None:
    low, high = args.scale
    if low > high:
        raise ArgError(f"scale range [{low}, {high}] is reversed", "write [low, high], e.g. [0.9, 1.1]")


random_affine = Component(
    "random_affine", "augmentations",
    params=(Param("degrees", Float(0, 180), 10.0, doc="largest rotation either way, in degrees (0 ≤ degrees ≤ 180)"),
            Param("scale", Tuple(PositiveFloat, 2), (0.9, 1.1), doc="range [low, high] of the zoom factor (> 0)")),
    summary="Rotate and scale each image by a small random amount (bilinear, zeros outside).",
    impl=IMPL + "random_affine", check=_check_affine)

gaussian_noise = Component(
    "gaussian_noise", "augmentations",
    params=(Param("std", Float(min=0), 0.1, doc="standard deviation of the added noise (≥ 0)"),),
    summary="Add Gaussian noise to every input value.",
    impl=IMPL + "gaussian_noise")

COMPONENTS = [random_flip, random_crop, random_affine, gaussian_noise]
