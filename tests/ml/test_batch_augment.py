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
from ml.cutout import Cutout
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
    assert (default.crop, default.flip_p, default.cutout_p, default.hole_inside) == (True, 0.5, 1.0, False)
    spelled = [*SPELLED_COARSE[:3], {"name": "Cutout", "length": 16, "fill": [26.0, 26.0, 26.0]}]
    assert batch_equivalent(spelled, **stats) == default, "the default ops spelled out are the default"
    coarse = batch_equivalent(SPELLED_COARSE, **stats)
    assert (coarse.crop, coarse.flip_p, coarse.cutout_p, coarse.hole_inside) == (True, 0.5, 0.5, True)
    assert [type(t).__name__ for t in coarse.compose][3] == "CoarseDropout"
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


def test_coarse_dropout_matches_albumentations_distributions():
    image = marker(32)
    batched = ours(image, SPELLED_COARSE, mean=RGB_MEAN, std=STD)
    reference = albumentations(image, SPELLED_COARSE, mean=RGB_MEAN, std=STD)
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


def axis_coverage(size: int, length: int) -> np.ndarray:
    """(size,) the exact chance that one Cutout hole covers each coordinate along a `size` px axis:
    the centre c is one of 0..size - 1, equally likely, and the hole spans [c - length // 2,
    c - length // 2 + length), clipped (DeVries & Taylor's code for even lengths)."""
    coordinates = np.arange(size)
    starts = coordinates.reshape(-1, 1) - length // 2
    covered = (starts <= coordinates) & (coordinates < starts + length)
    return covered.mean(axis=0)


def test_the_papers_cutout_exactly():
    coverage = axis_coverage(32, 16)
    assert (coverage[0], coverage[-1]) == (9 / 32, 8 / 32), "row 0: centres 0..8; row 31: centres 24..31"
    assert np.all(coverage[8:24] == 0.5) and coverage.sum() == 14
    # rows and columns independent: the mean masked area is 14 x 14 = 196 px (CoarseDropout at p 0.5: 128),
    # pixel (0, 0) is masked with chance (9/32)^2 = 81/1024 (CoarseDropout at p 0.5: (1/17)^2 / 2, 46x less)
    assert coverage.sum() ** 2 == 196 and coverage[0] ** 2 == 81 / 1024


def test_default_cutout_matches_albumentations_and_the_paper():
    """Per-pixel masking frequency, masked area and hole extents of the default's Cutout, batched and
    through albumentations, against each other and against the exact expectation."""
    image = marker(32)
    expected = np.outer(axis_coverage(32, 16), axis_coverage(32, 16))  # rows and columns drawn independently
    outputs = {
        "batched": ours(image, "default", mean=RGB_MEAN, std=STD),
        "albumentations": albumentations(image, "default", mean=RGB_MEAN, std=STD),
    }
    holes = {name: out[..., 0] % STEP != OFFSET for name, out in outputs.items()}
    for name, hole in holes.items():
        assert np.all(outputs[name][hole] == 26), f"{name}: filled with the mean"
        area = hole.sum(axis=(1, 2))
        assert area.min() >= 8 * 8 and area.max() == 16 * 16, f"{name}: every image, clipped to 8..16 px a side"
        assert abs(area.mean() - 196) < 3, f"{name}: mean masked area {area.mean():.1f} px, exactly 196 expected"
        frequency = hole.mean(axis=0)
        corners = (np.array([0, 0, -1, -1]), np.array([0, -1, 0, -1]))
        assert np.abs(frequency[corners] - expected[corners]).max() < 0.02, (
            f"{name}: corner pixels masked {frequency[corners]}, expected {expected[corners]} (81, 72, 72, 64 / 1024)"
        )
        assert abs(frequency[8:24, 8:24].mean() - 0.25) < 0.01, f"{name}: the centre masked 1 time in 4"
        assert np.abs(frequency - expected).max() < 0.04, f"{name}: per-pixel masking frequency"
    difference = np.abs(holes["batched"].mean(axis=0) - holes["albumentations"].mean(axis=0))
    assert difference.max() < 0.05, f"per-pixel masking frequency differs by up to {difference.max():.3f}"
    for axis in (1, 2):  # the hole's clipped extent along each axis, and where it starts
        covered = {name: hole.any(axis=axis) for name, hole in holes.items()}
        extents = [c.sum(axis=1) for c in covered.values()]
        starts = [c.argmax(axis=1) for c in covered.values()]
        assert set(extents[0]) == set(range(8, 17)) and set(starts[0]) == set(range(24))
        assert_same_distribution(*extents, f"hole extent (axis {axis})")
        assert_same_distribution(*starts, f"hole start (axis {axis})")


def test_crop_and_flip_without_cutout_matches_albumentations():
    image, spec = marker(32), [*SPELLED_COARSE[:2], {"name": "HorizontalFlip", "p": 0.3}]
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


GRAY_COARSE = [
    {"name": "PadIfNeeded", "min_height": 36, "min_width": 36, "border_mode": 4},
    {"name": "RandomCrop", "height": 28, "width": 28},
    {"name": "HorizontalFlip", "p": 0.5},
    {
        "name": "CoarseDropout",
        "num_holes_range": [1, 1],
        "hole_height_range": [14, 14],
        "hole_width_range": [14, 14],
        "fill": 128,
        "p": 0.5,
    },
]


@pytest.mark.parametrize(
    ("augmentation", "starts"),
    [
        ("default", range(21)),  # Cutout: a 14 px hole centred at 0..27 starts at max(0, centre - 7)
        (GRAY_COARSE, range(15)),  # CoarseDropout: a 14 px hole inside starts at 0..14
    ],
    ids=["cutout", "coarse_dropout"],
)
@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_grayscale_28px_matches_albumentations(axis, augmentation, starts):
    codes = 9 * np.arange(28) + 4  # max 247; the fill round(0.5 * 255) = 128 is not 9k + 4
    image = np.repeat(codes[:, None], 28, axis=1)[..., None].astype(np.uint8)
    image = image if axis == "rows" else np.ascontiguousarray(image.transpose(1, 0, 2))
    stats = {"mean": (0.5,), "std": (0.3,)}
    found = []
    for out in (ours(image, augmentation, **stats), albumentations(image, augmentation, **stats)):
        lines = out[..., 0].transpose(0, 2, 1) if axis == "rows" else out[..., 0]
        found.append(decode(lines, step=9))
    for key in ("offset", "reversed", "cut"):
        assert_same_distribution(found[0][key], found[1][key], f"{axis}: {key}")
    assert set(found[0]["offset"]) == set(range(9))
    assert_same_distribution(found[0]["start"][found[0]["cut"]], found[1]["start"][found[1]["cut"]], "hole start")
    assert set(found[0]["start"][found[0]["cut"]]) == set(starts)


def test_flip_only_list_matches_its_probability():
    image = marker(32)
    out = ours(image, [{"name": "HorizontalFlip", "p": 0.25}], mean=RGB_MEAN, std=STD, n=2000)
    flipped = np.array([np.array_equal(o, image[:, ::-1]) for o in out])
    unchanged = np.array([np.array_equal(o, image) for o in out])
    assert np.all(flipped ^ unchanged) and abs(flipped.mean() - 0.25) < 0.04


FLIP_03 = {"name": "HorizontalFlip", "p": 0.3}
CUTOUT = {"name": "Cutout", "num_holes": 1, "length": 16, "fill": [26.0, 26.0, 26.0], "p": 1.0}
SPELLED_COARSE = [  # the default with CoarseDropout's hole (inside the image, p 0.5) in place of Cutout
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
        ([*SPELLED_COARSE[:3], CUTOUT], "default"),
        ([*SPELLED_COARSE[:3], {"name": "Cutout", "length": 16, "fill": 26}], "default"),  # one fill for every channel
        ([{**SPELLED_COARSE[0], "fill": 9}, *SPELLED_COARSE[1:3], CUTOUT], "default"),  # a fill reflect never uses
        ([*SPELLED_COARSE[:3], CUTOUT, {"name": "Normalize", "mean": list(RGB_MEAN), "std": list(STD)}], "default"),
        ([*SPELLED_COARSE[:3], {**SPELLED_COARSE[3], "fill": 26}], SPELLED_COARSE),
        ([*SPELLED_COARSE[:3], {**SPELLED_COARSE[3], "fill_mask": 3}], SPELLED_COARSE),  # no masks here
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
        [*SPELLED_COARSE[:3], {**CUTOUT, "fill": 0}],  # Cutout filled with black
        [*SPELLED_COARSE[:3], {**CUTOUT, "p": 0.5}],
        [*SPELLED_COARSE[:3], {**CUTOUT, "length": 8}],
        [*SPELLED_COARSE[:3], {**CUTOUT, "num_holes": 2}],
        [*SPELLED_COARSE[:3], {**SPELLED_COARSE[3], "fill": 0}],  # CoarseDropout filled with black
        [*SPELLED_COARSE[:3], {**SPELLED_COARSE[3], "p": 1.0}],
        [{**SPELLED_COARSE[0], "border_mode": 0, "fill": 9}, *SPELLED_COARSE[1:]],  # a constant border
        [*SPELLED_COARSE, {"name": "Normalize", "mean": 0.5, "std": 0.5}],
    ):
        assert batch_equivalent(other, **stats) is None, other


@pytest.mark.parametrize(("size", "pad"), [(16, 2), (28, 4), (32, 4), (64, 8)])
def test_the_default_pad_and_cutout_scale_with_the_image_size(size, pad):
    compose = build_train_transform("default", image_size=size, mean=RGB_MEAN, std=STD)
    padding, _, _, cutout, _ = compose.transforms
    assert (padding.min_height, padding.min_width) == (size + 2 * pad, size + 2 * pad)
    assert isinstance(cutout, Cutout) and (cutout.length, cutout.num_holes, cutout.p) == (size // 2, 1, 1.0)
    augment = batch_equivalent("default", image_size=size, mean=RGB_MEAN, std=STD)
    assert augment is not None and augment.pad == pad
    draws = augment._draws(4000, size, size, torch.Generator().manual_seed(0))
    assert draws["dy"].min() == 0 and draws["dy"].max() == 2 * pad
    half = size // 4  # half the hole: the hole's first row is its centre (0..size - 1) less this
    assert (draws["hy"].min(), draws["hy"].max()) == (-half, size - 1 - half)
