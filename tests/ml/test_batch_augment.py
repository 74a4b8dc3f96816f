"""ml.batch_augment: what it covers, shapes and devices, seeds, and the same distributions as the
albumentations pipeline it replaces, read back from marker images whose pixels say where they
came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from ml.augment import PAD, describe, reseed
from ml.batch_augment import BatchAugment, pixels
from ml.normalization import Normalization
from ml.transforms import RunTransforms

SAMPLES = 3000  # per pipeline: a 1/9 bin is 333 +- 17, a coin 1500 +- 27
STEP, OFFSET = 8, 4  # a marker pixel is STEP * coordinate + OFFSET; the Cutout fill is not
RGB_MEAN, STD = (0.1, 0.1, 0.1), (0.25, 0.25, 0.25)  # fill round(0.1 * 255) = 26: 26 % 8 != 4
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def batch_equivalent(augmentation, *, image_size: int, mean, std) -> BatchAugment | None:
    return RunTransforms.build(augmentation, image_size=image_size, mean=mean, std=std).batched


def build_train_transform(augmentation, *, image_size: int, mean, std, seed: int | None = None):
    """The albumentations pipeline a run would use, seeded like a loader's copy."""
    compose = RunTransforms.build(augmentation, image_size=image_size, mean=mean, std=std, batched=False).train
    if seed is not None:
        reseed(compose, seed)
    return compose


def normalize(images: torch.Tensor, *, mean, std) -> torch.Tensor:
    return Normalization.of(mean, std).normalize(images)


def denormalize(x: torch.Tensor, *, mean, std) -> np.ndarray:
    return Normalization.of(mean, std).denormalize(x)


def fill(mean) -> tuple[int, ...]:
    return Normalization.of(mean, mean).cutout_fill


def marker(size: int) -> np.ndarray:
    """(size, size, 3) uint8: channel 0 codes the row, channel 1 the column, channel 2 is constant."""
    coords = STEP * np.arange(size) + OFFSET
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def ours(image: np.ndarray, augmentation, *, mean, std, n: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """n outputs of the batched pipeline on copies of `image`, back in uint8 (n, H, W, C)."""
    augment = batch_equivalent(augmentation, image_size=image.shape[0], mean=mean, std=std)
    source = pixels(torch.from_numpy(np.stack([image] * 4)), fill(mean))
    indices = torch.randint(4, (n,), generator=torch.Generator().manual_seed(seed + 1))
    x = augment.apply(source, (image.shape[2], *image.shape[:2]), indices, torch.Generator().manual_seed(seed))
    return denormalize(x, mean=mean, std=std)


def albumentations(image: np.ndarray, augmentation, *, mean, std, n: int = SAMPLES) -> np.ndarray:
    compose = build_train_transform(augmentation, image_size=image.shape[0], mean=mean, std=std, seed=0)
    out = np.stack([compose(image=image)["image"] for _ in range(n)])
    return denormalize(torch.from_numpy(out).permute(0, 3, 1, 2), mean=mean, std=std)


def decode(codes: np.ndarray, *, step: int = STEP) -> dict[str, np.ndarray]:
    """Per sample, from (n, H, W) marker codes of the column coordinate (pass row codes transposed):
    the crop offset, whether the columns are reversed (flipped), whether there is a hole and its first
    column. Reads a row that the hole misses: rows H/4 and 3H/4 cannot both be in a hole of H/2."""
    size = codes.shape[2]
    hole = codes % step != OFFSET
    free = np.where(hole[:, size // 4].any(axis=1), 3 * size // 4, size // 4)
    line = codes[np.arange(len(codes)), free] // step  # (n, W): source column of each output column
    middle = np.arange(PAD, size - PAD)  # outputs that read inside the image whatever the offset
    flipped = line[:, middle[1]] < line[:, middle[0]]
    position = np.where(flipped, size - 1 - middle[0], middle[0])
    covered = hole.any(axis=1)  # (n, W): the columns the hole covers
    return {
        "offset": line[:, middle[0]] - position + PAD,
        "reversed": flipped,
        "cut": hole.any(axis=(1, 2)),
        "start": covered.argmax(axis=1),
    }


def assert_same_distribution(a: np.ndarray, b: np.ndarray, what: str) -> None:
    values = np.union1d(a, b)
    table = np.stack([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    p_value = chi2_contingency(table)[1] if len(values) > 1 else 1.0
    assert p_value > 1e-3, f"{what}: batched {table[0]} vs albumentations {table[1]} (p = {p_value:.2g})"


def test_coverage_and_the_equivalent_pipeline():
    stats = {"image_size": 32, "mean": RGB_MEAN, "std": STD}
    for spec in ("default", "none", [], [{"name": "HorizontalFlip", "p": 0.3}]):
        augment = batch_equivalent(spec, **stats)
        assert augment is not None, spec
        assert describe(augment.compose) == describe(build_train_transform(spec, **stats))
    flip = batch_equivalent([{"name": "HorizontalFlip", "p": 0.3}], **stats)
    assert (flip.crop, flip.flip_p, flip.cutout_p) == (False, 0.3, 0.0)
    default = batch_equivalent("default", **stats)
    assert (default.crop, default.flip_p, default.cutout_p) == (True, 0.5, 0.5)
    spelled = [
        {"name": "PadIfNeeded", "min_height": 40, "min_width": 40, "border_mode": 4},
        {"name": "RandomCrop", "height": 32, "width": 32},
        {"name": "HorizontalFlip", "p": 0.5},
        {
            "name": "CoarseDropout",
            "num_holes_range": [1, 1],
            "hole_height_range": [16, 16],
            "hole_width_range": [16, 16],
            "fill": [26.0, 26.0, 26.0],
            "p": 0.5,
        },
    ]
    assert batch_equivalent(spelled, **stats) == default, "the default ops spelled out are the default"
    crop_flip = batch_equivalent([*spelled[:2], {"name": "HorizontalFlip", "p": 0.3}], **stats)
    assert (crop_flip.crop, crop_flip.flip_p, crop_flip.cutout_p, crop_flip.pad) == (True, 0.3, 0.0, 4)
    own = batch_equivalent([{"name": "HorizontalFlip"}, {"name": "Normalize", "mean": 0.5, "std": 0.5}], **stats)
    assert own is not None and own.normalization == Normalization.of((0.5,) * 3, (0.5,) * 3), "the user's Normalize"
    for uncovered in (
        [{"name": "VerticalFlip"}],
        [{"name": "HorizontalFlip"}, {"name": "HorizontalFlip"}],
        spelled[:2],
        [{**spelled[0], "min_height": 48, "min_width": 48}, *spelled[1:3]],
    ):
        assert batch_equivalent(uncovered, **stats) is None, uncovered


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_shapes_dtypes_devices_and_seeds(device, channels, size):
    mean, std = (0.3,) * channels, (0.2,) * channels
    images = torch.randint(256, (10, size, size, channels), dtype=torch.uint8)
    augment = batch_equivalent("default", image_size=size, mean=mean, std=std)
    source = pixels(images.to(device), fill(mean))
    indices = torch.tensor([0, 3, 3, 9], device=device)

    def batch(seed):
        return augment.apply(source, (channels, size, size), indices, torch.Generator().manual_seed(seed))

    x = batch(0)
    assert x.shape == (4, channels, size, size) and x.dtype == torch.float32 and x.device.type == device
    assert x.stride() == (channels * size * size, size * size, size, 1)
    assert torch.equal(x, batch(0)) and not torch.equal(x, batch(1))
    assert torch.equal(
        x.cpu(),
        augment.apply(
            pixels(images, fill(mean)), (channels, size, size), indices.cpu(), torch.Generator().manual_seed(0)
        ),
    ), "same draws on every device"


def test_normalize_matches_the_eval_transform():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    expected = (images / 255.0 - np.array(mean)) / np.array(std)
    x = normalize(torch.from_numpy(images), mean=mean, std=std)
    assert x.is_contiguous() and x.shape == (5, 3, 32, 32)
    gray = normalize(torch.from_numpy(images[..., :1]), mean=mean[:1], std=std[:1])
    assert gray.stride() == (32 * 32, 32 * 32, 32, 1), "standard strides, not channels_last (ml.runtime.memory_format)"
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    none = batch_equivalent("none", image_size=32, mean=mean, std=std)
    out = none.apply(pixels(torch.from_numpy(images), fill(mean)), (3, 32, 32), torch.arange(5), torch.Generator())
    assert torch.equal(out, x), '"none" is the eval transform'


def test_default_matches_albumentations_distributions():
    image = marker(32)
    batched = ours(image, "default", mean=RGB_MEAN, std=STD)
    reference = albumentations(image, "default", mean=RGB_MEAN, std=STD)
    ours_stats, theirs = [(decode(out[..., 0].transpose(0, 2, 1)), decode(out[..., 1])) for out in (batched, reference)]
    for rows, cols in (ours_stats, theirs):
        assert not rows["reversed"].any(), "only horizontal flips"
        assert np.array_equal(rows["cut"], cols["cut"])
    for axis, mine, ref in zip(("row", "column"), ours_stats, theirs):
        assert set(mine["offset"]) == set(range(9)), f"{axis} crop offsets are 0..8"
        assert_same_distribution(mine["offset"], ref["offset"], f"{axis} crop offset")
        assert_same_distribution(mine["start"][mine["cut"]], ref["start"][ref["cut"]], f"{axis} hole start")
        assert set(mine["start"][mine["cut"]]) == set(range(17)), "the whole hole inside: starts 0..16"
    assert abs(ours_stats[1]["reversed"].mean() - 0.5) < 0.04
    assert_same_distribution(ours_stats[1]["reversed"], theirs[1]["reversed"], "flips")
    assert abs(ours_stats[0]["cut"].mean() - 0.5) < 0.04
    assert_same_distribution(ours_stats[0]["cut"], theirs[0]["cut"], "Cutout applied")
    holes = (batched[..., 0] % STEP != OFFSET).sum(axis=(1, 2))
    assert set(holes) == {0, 256}, "one 16x16 hole or none"
    assert np.all(batched[batched[..., 0] % STEP != OFFSET] == 26), "filled with the mean"
    per_pixel = np.abs(batched.mean(axis=0) - reference.mean(axis=0))
    assert per_pixel.max() < 6, "the average image matches, pixel by pixel (values 0-255)"


def test_crop_and_flip_without_cutout_matches_albumentations():
    image, spec = marker(32), [*SPELLED_DEFAULT[:2], {"name": "HorizontalFlip", "p": 0.3}]
    assert batch_equivalent(spec, image_size=32, mean=RGB_MEAN, std=STD) is not None
    batched = ours(image, spec, mean=RGB_MEAN, std=STD)
    reference = albumentations(image, spec, mean=RGB_MEAN, std=STD)
    ours_stats, theirs = [(decode(out[..., 0].transpose(0, 2, 1)), decode(out[..., 1])) for out in (batched, reference)]
    assert not ours_stats[0]["cut"].any() and not ours_stats[1]["cut"].any(), "no holes"
    for axis, mine, ref in zip(("row", "column"), ours_stats, theirs):
        assert set(mine["offset"]) == set(range(9)), f"{axis} crop offsets are 0..8"
        assert_same_distribution(mine["offset"], ref["offset"], f"{axis} crop offset")
    assert abs(ours_stats[1]["reversed"].mean() - 0.3) < 0.04
    assert_same_distribution(ours_stats[1]["reversed"], theirs[1]["reversed"], "flips")
    assert np.abs(batched.mean(axis=0) - reference.mean(axis=0)).max() < 6


@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_grayscale_28px_matches_albumentations(axis):
    codes = 9 * np.arange(28) + 4  # max 247; the fill round(0.5 * 255) = 128 is not 9k + 4
    image = np.repeat(codes[:, None], 28, axis=1)[..., None].astype(np.uint8)
    image = image if axis == "rows" else np.ascontiguousarray(image.transpose(1, 0, 2))
    stats = {"mean": (0.5,), "std": (0.3,)}
    found = []
    for out in (ours(image, "default", **stats), albumentations(image, "default", **stats)):
        lines = out[..., 0].transpose(0, 2, 1) if axis == "rows" else out[..., 0]
        found.append(decode(lines, step=9))
    for key in ("offset", "reversed", "cut"):
        assert_same_distribution(found[0][key], found[1][key], f"{axis}: {key}")
    assert set(found[0]["offset"]) == set(range(9))
    assert_same_distribution(found[0]["start"][found[0]["cut"]], found[1]["start"][found[1]["cut"]], "hole start")
    assert set(found[0]["start"][found[0]["cut"]]) == set(range(15)), "a 14 px hole starts at 0..14"


def test_flip_only_list_matches_its_probability():
    image = marker(32)
    out = ours(image, [{"name": "HorizontalFlip", "p": 0.25}], mean=RGB_MEAN, std=STD, n=2000)
    flipped = np.array([np.array_equal(o, image[:, ::-1]) for o in out])
    unchanged = np.array([np.array_equal(o, image) for o in out])
    assert np.all(flipped ^ unchanged) and abs(flipped.mean() - 0.25) < 0.04


FLIP_03 = {"name": "HorizontalFlip", "p": 0.3}
SPELLED_DEFAULT = [
    {"name": "PadIfNeeded", "min_height": 40, "min_width": 40, "border_mode": 4},
    {"name": "RandomCrop", "height": 32, "width": 32},
    {"name": "HorizontalFlip", "p": 0.5},
    {
        "name": "CoarseDropout",
        "num_holes_range": [1, 1],
        "hole_height_range": [16, 16],
        "hole_width_range": [16, 16],
        "fill": [26.0, 26.0, 26.0],
        "p": 0.5,
    },
]


@pytest.mark.parametrize(
    ("spelled", "same_as"),
    [
        ([*SPELLED_DEFAULT[:3], {**SPELLED_DEFAULT[3], "fill": 26}], "default"),  # one fill for every channel
        ([{**SPELLED_DEFAULT[0], "fill": 9}, *SPELLED_DEFAULT[1:]], "default"),  # a fill a reflect border never uses
        ([*SPELLED_DEFAULT[:3], {**SPELLED_DEFAULT[3], "fill_mask": 3}], "default"),  # no masks here
        ([*SPELLED_DEFAULT, {"name": "Normalize", "mean": list(RGB_MEAN), "std": list(STD)}], "default"),
        ([{"name": "VerticalFlip", "p": 0}], "none"),  # never fires
        ([{"name": "HorizontalFlip", "p": 0.0}, {"name": "VerticalFlip", "p": 0.0}], "none"),
        ([{"name": "VerticalFlip", "p": 0}, FLIP_03], [FLIP_03]),
    ],
)
def test_lists_that_do_what_a_covered_pipeline_does_take_the_batched_path(spelled, same_as):
    stats = {"image_size": 32, "mean": RGB_MEAN, "std": STD}
    augment = batch_equivalent(spelled, **stats)
    assert augment is not None and augment == batch_equivalent(same_as, **stats)


def test_lists_that_do_something_else_stay_on_albumentations():
    stats = {"image_size": 32, "mean": RGB_MEAN, "std": STD}
    for other in (
        [*SPELLED_DEFAULT[:3], {**SPELLED_DEFAULT[3], "fill": 0}],  # Cutout filled with black
        [{**SPELLED_DEFAULT[0], "border_mode": 0, "fill": 9}, *SPELLED_DEFAULT[1:]],  # a constant border
        [*SPELLED_DEFAULT, {"name": "Normalize", "mean": 0.5, "std": 0.5}],
    ):
        assert batch_equivalent(other, **stats) is None, other


@pytest.mark.parametrize(("size", "pad"), [(16, 2), (28, 4), (32, 4), (64, 8)])
def test_the_default_pad_and_cutout_scale_with_the_image_size(size, pad):
    compose = build_train_transform("default", image_size=size, mean=RGB_MEAN, std=STD)
    padding, _, _, cutout, _ = compose.transforms
    assert (padding.min_height, padding.min_width) == (size + 2 * pad, size + 2 * pad)
    assert cutout.hole_height_range == (size // 2, size // 2)
    augment = batch_equivalent("default", image_size=size, mean=RGB_MEAN, std=STD)
    assert augment is not None and augment.pad == pad
    offsets = augment._draws(4000, size, size, torch.Generator().manual_seed(0))["dy"]
    assert offsets.min() == 0 and offsets.max() == 2 * pad
