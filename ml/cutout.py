"""Cutout as DeVries & Taylor (2017) wrote it, for albumentations pipelines: each hole's centre is
uniform over the whole image and the square around it is clipped at the borders, on every image.

albumentations 2 has no Cutout; its CoarseDropout keeps the whole hole inside the image, which masks
border pixels far less often (with 16 px holes on 32 px images, row 0 lies in 1 hole in 17 against
the paper's 9 in 32) and, at its p 0.5, masks 128 px on average against the paper's 196.
Importing this module registers `Cutout` with albumentations' serialization, so a pipeline holding
it round-trips through `A.to_dict` / `A.from_dict` as "ml.cutout.Cutout"."""

from __future__ import annotations

from typing import Any

import numpy as np
from albumentations.augmentations.dropout.transforms import BaseDropout
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

__all__ = ["Cutout"]


class Cutout(BaseDropout):  # type: ignore[misc]  # albumentations ships no type information
    """`num_holes` squares of side `length` px, each centred on a pixel drawn uniformly from the image
    and clipped at its borders (holes may overlap), filled with `fill` (one value, or one per
    channel), applied with probability `p` (the paper: always). The paper's code spans rows
    [y - length // 2, y + length // 2); here a hole spans [y - length // 2, y - length // 2 + length),
    the same for the even lengths it uses and `length` rows, not length - 1, for odd ones."""

    class InitSchema(BaseTransformInitSchema):  # type: ignore[misc]  # the same
        num_holes: int = Field(ge=1)
        length: int = Field(ge=1)
        fill: tuple[float, ...] | float

    def __init__(
        self,
        num_holes: int = 1,
        length: int = 16,
        fill: tuple[float, ...] | float = 0,
        p: float = 1.0,
    ):
        super().__init__(fill=fill, fill_mask=None, p=p)
        self.num_holes = num_holes
        self.length = length

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_holes", "length", "fill")

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The holes as (x_min, y_min, x_max, y_max) rows, clipped to the image: BaseDropout's input."""
        height, width = params["shape"][:2]
        y = self.random_generator.integers(0, height, size=self.num_holes)
        x = self.random_generator.integers(0, width, size=self.num_holes)
        top, left = y - self.length // 2, x - self.length // 2
        holes = np.stack(
            [
                np.clip(left, 0, width),
                np.clip(top, 0, height),
                np.clip(left + self.length, 0, width),
                np.clip(top + self.length, 0, height),
            ],
            axis=-1,
        )
        return {"holes": holes, "seed": self.random_generator.integers(0, 2**32 - 1)}
