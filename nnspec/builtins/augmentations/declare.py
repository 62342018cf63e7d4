"""Built-in augmentation declarations. Never import torch here: `nnspec validate` reads these.

Implementations live in torch_impl.py: `fn(args) -> callable(x, generator) -> x`, applied to
whole training batches on their device (image batches are [N, C, H, W]). An augmentation that
changes or constrains the sample shape declares `info["sample_shape"]`: `(args, shape) -> shape`,
pure Python, raising ValueError; `check_augment` runs these rules for `validate` and training
alike (an augmentation without the rule keeps the shape).
"""
from __future__ import annotations

from nnspec.errors import DataError
from nnspec.registry.catalog import Component
from nnspec.registry.types import ArgError, Choice, Float, NonNegativeInt, Param, PositiveFloat, PositiveInt, Tuple

IMPL = "nnspec.builtins.augmentations.torch_impl:"

def need_images(name: str, sample: tuple[int, ...]) -> None:
    if len(sample) != 3:
        raise ValueError(f"{name} needs image batches [N, C, H, W], got samples of shape {list(sample)}; "
                         "give the model an input like [1, 8, 8] (e.g. digits(shape = [1, 8, 8]))")


def flip_shape(args, sample: tuple[int, ...]) -> tuple[int, ...]:
    if len(sample) < (1 if args.axis == "horizontal" else 2):
        raise ValueError(f"random_flip(axis = {args.axis}) cannot flip samples of shape {list(sample)}; "
                         "give the model an image input like [1, 8, 8]")
    return sample


def crop_room(args, sample: tuple[int, ...]) -> tuple[int, int]:
    """How far the crop window can move down and right inside the padded image."""
    need_images("random_crop", sample)
    (height, width), pad = args.size, args.padding
    _, h, w = sample
    h_room, w_room = h + 2 * pad - height, w + 2 * pad - width
    if h_room < 0 or w_room < 0:
        raise ValueError(f"random_crop size [{height}, {width}] is larger than the padded image "
                         f"[{h + 2 * pad}, {w + 2 * pad}]")
    return h_room, w_room


def _crop_shape(args, sample: tuple[int, ...]) -> tuple[int, ...]:
    crop_room(args, sample)
    return (sample[0], *args.size)


def _images_only(name: str):
    def shape(args, sample: tuple[int, ...]) -> tuple[int, ...]:
        need_images(name, sample)
        return sample
    return shape


random_flip = Component(
    "random_flip", "augmentations",
    params=(Param("p", Float(0, 1), 0.5, doc="probability that a sample is flipped (0 ≤ p ≤ 1)"),
            Param("axis", Choice("horizontal", "vertical"), "horizontal",
                  doc="horizontal mirrors left-right (the last axis), vertical up-down (the one before)")),
    summary="Mirror each sample with probability p.",
    impl=IMPL + "random_flip", info={"sample_shape": flip_shape})

random_crop = Component(
    "random_crop", "augmentations",
    params=(Param("size", Tuple(PositiveInt, 2), doc="output height and width; one number means a square"),
            Param("padding", NonNegativeInt, 0, doc="zeros added on every side before cropping (≥ 0)")),
    summary="Pad each image, then crop it back to `size` at a random offset per sample.",
    impl=IMPL + "random_crop", info={"sample_shape": _crop_shape})


def _check_affine(args) -> None:
    low, high = args.scale
    if low > high:
        raise ArgError(f"scale range [{low}, {high}] is reversed", "write [low, high], e.g. [0.9, 1.1]")


random_affine = Component(
    "random_affine", "augmentations",
    params=(Param("degrees", Float(0, 180), 10.0, doc="largest rotation either way, in degrees (0 ≤ degrees ≤ 180)"),
            Param("scale", Tuple(PositiveFloat, 2), (0.9, 1.1), doc="range [low, high] of the zoom factor (> 0)")),
    summary="Rotate and scale each image by a small random amount (bilinear, zeros outside).",
    impl=IMPL + "random_affine", check=_check_affine, info={"sample_shape": _images_only("random_affine")})

gaussian_noise = Component(
    "gaussian_noise", "augmentations",
    params=(Param("std", Float(min=0), 0.1, doc="standard deviation of the added noise (≥ 0)"),),
    summary="Add Gaussian noise to every input value.",
    impl=IMPL + "gaussian_noise")

COMPONENTS = [random_flip, random_crop, random_affine, gaussian_noise]


def check_augment(uses, input_type) -> None:
    """The augmentations fit the model input: float inputs, and each keeps the sample shape.
    DataError located at the augmentation that does not fit."""
    if not uses:
        return
    if input_type.dtype != "float":
        raise DataError("augmentations need float inputs; this model's input is integer tokens",
                        "remove `augment` from the data block", span=uses[0].span)
    want = tuple(input_type.shape)
    for use in uses:
        rule = use.component.info.get("sample_shape")
        if rule is None:
            continue
        try:
            out = tuple(rule(use.args, want))
        except ValueError as err:
            raise DataError(f"augmentation `{use.name}`: {err}",
                            f"augmentations apply to samples of the model's input shape {list(want)}",
                            span=use.span) from err
        if out != want:
            raise DataError(f"augmentation `{use.name}` turns samples of shape {list(want)} into "
                            f"{list(out)}, but the model input is {list(want)}",
                            "crop to the image size (pad first for translations), e.g. random_crop(32, padding = 4)",
                            span=use.span)
