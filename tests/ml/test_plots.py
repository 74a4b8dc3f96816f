"""Each plot writes a PNG that opens, at a readable size, with the content its artifact promises."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ml import plots

EPOCHS = [
    {"epoch": 1, "lr": 0.05, "train_loss": 1.9, "train_acc": 0.31, "test_loss": 1.7, "test_acc": 0.40},
    {"epoch": 2, "lr": 0.05, "train_loss": 1.4, "train_acc": 0.49, "test_loss": 1.3, "test_acc": 0.55},
    {"epoch": 3, "lr": 0.005, "train_loss": 1.1, "train_acc": 0.61, "test_loss": 1.2, "test_acc": 0.58},
]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, inspected before they are closed."""
    seen = []
    original = plots._save

    def spy(fig, path):
        seen.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def open_png(path) -> Image.Image:
    assert path.exists() and path.stat().st_size > 1000
    image = Image.open(path)
    image.verify()  # a truncated or non-PNG file fails here
    image = Image.open(path)
    assert image.format == "PNG"
    return image


def test_accuracy_curve_is_in_percent(tmp_path, figures):
    path = plots.plot_accuracy(EPOCHS, tmp_path / "accuracy.png")
    width, height = open_png(path).size
    assert 500 <= width <= 1200 and 350 <= height <= 900
    ax = figures[0].axes[0]
    train, test = ax.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3]
    assert list(test.get_ydata()) == pytest.approx([40.0, 55.0, 58.0])
    assert "%" in ax.get_ylabel() and ax.get_title()


def test_loss_curve_and_history_write_both_files(tmp_path, figures):
    written = plots.plot_history(EPOCHS, tmp_path)
    assert [p.name for p in written] == ["accuracy.png", "loss.png"]
    for path in written:
        open_png(path)
    train, test = figures[1].axes[0].get_lines()
    assert list(train.get_ydata()) == pytest.approx([1.9, 1.4, 1.1])
    assert [text.get_text() for text in figures[1].axes[0].get_legend().get_texts()] == ["train", "test"]


def test_no_epochs_still_writes_a_figure(tmp_path):
    open_png(plots.plot_loss([], tmp_path / "loss.png"))


@pytest.mark.parametrize(
    ("lrs", "scale"),
    [
        (list(np.geomspace(1e-5, 0.1, 50)), "log"),  # four decades
        ([0.05] * 20 + [0.005] * 20, "linear"),  # one decade: ReduceLROnPlateau's step
        (list(np.linspace(0.0, 0.4, 30)) + list(np.linspace(0.4, 0.0, 30)), "linear"),  # one cycle from 0
    ],
)
def test_lr_axis_goes_log_past_two_decades(tmp_path, figures, lrs, scale):
    open_png(plots.plot_lr(lrs, tmp_path / "lr.png"))
    ax = figures[0].axes[0]
    assert ax.get_yscale() == scale
    assert len(ax.get_lines()[0].get_ydata()) == len(lrs)


def test_confusion_matrix_shows_counts_names_and_row_colours(tmp_path, figures):
    classes = ["cat", "dog", "ship"]
    matrix = np.array([[8, 2, 0], [1, 90, 9], [0, 0, 0]])
    path = plots.plot_confusion(matrix, classes, tmp_path / "confusion_matrix.png")
    width, height = open_png(path).size
    assert 500 <= width <= 1500 and 400 <= height <= 1500
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in matrix.ravel())
    colours = ax.images[0].get_array()
    assert colours[0, 0] == pytest.approx(0.8) and colours[1, 1] == pytest.approx(0.9)
    assert np.all(colours[2] == 0)  # a class with no test images is blank, not NaN


def test_confusion_matrix_must_match_the_classes(tmp_path):
    with pytest.raises(ValueError, match=r"\(3, 3\).*got shape \(2, 2\)"):
        plots.plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "c.png")


def test_grid_of_grayscale_and_rgb_tiles(tmp_path, figures):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(7, 28, 28, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    titles = [f"pred: cat / true: dog {i}" for i in range(7)]
    path = plots.plot_image_grid(gray, titles, tmp_path / "gray.png", suptitle="Misclassified")
    width, height = open_png(path).size
    tile = plots.TILE_INCHES * plots.DPI
    assert width == pytest.approx(5 * tile, abs=2)  # 5 columns of 2.2-inch tiles
    assert height == pytest.approx(2 * tile + 0.5 * plots.DPI, abs=2)  # 2 rows and the suptitle
    shown = [ax for ax in figures[0].axes if ax.images]
    assert len(shown) == 7 and shown[0].images[0].get_cmap().name == "gray"
    assert shown[6].get_title() == titles[6]
    assert figures[0].get_suptitle() == "Misclassified"

    path = plots.plot_image_grid(rgb, ["a", "b", "c"], tmp_path / "rgb.png", columns=5)
    assert open_png(path).size[0] == pytest.approx(3 * tile, abs=2)  # no empty columns for 3 images
    assert figures[1].axes[0].images[0].get_array().shape == (32, 32, 3)


def test_long_tile_titles_break_at_the_slash(tmp_path, figures):
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    titles = ["pred: cat / true: dog", "pred: a_very_long_folder_class / true: another_long_one"]
    plots.plot_image_grid(images, titles, tmp_path / "long.png")
    shown = [ax.get_title() for ax in figures[0].axes if ax.images]
    assert shown == ["pred: cat / true: dog", "pred: a_very_long_folder_class\ntrue: another_long_one"]


def test_grid_accepts_hw_grayscale_and_renders_an_empty_set(tmp_path):
    images = np.zeros((2, 16, 16), dtype=np.uint8)
    open_png(plots.plot_image_grid(images, ["x", "y"], tmp_path / "hw.png"))
    empty = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    open_png(plots.plot_image_grid(empty, [], tmp_path / "none.png", suptitle="Misclassified (0 of 10)"))


@pytest.mark.parametrize(
    ("images", "titles", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), ["a", "b"], "uint8.*float32"),
        (np.zeros((2, 8, 8, 2), dtype=np.uint8), ["a", "b"], r"got shape \(2, 8, 8, 2\)"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), ["a"], "1 titles for 2 images"),
    ],
)
def test_grid_rejects_bad_input_naming_it(tmp_path, images, titles, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_image_grid(images, titles, tmp_path / "bad.png")


def test_lr_finder_plot_marks_each_suggestion(tmp_path, figures):
    lrs = np.geomspace(1e-5, 1.0, 60)
    losses = 2.3 - np.tanh(3 * (np.log10(lrs) + 2)) + np.random.default_rng(0).normal(0, 0.05, 60)
    smoothed = 2.3 - np.tanh(3 * (np.log10(lrs) + 2))
    suggestions = {"steepest": 0.0533, "valley": 0.021, "minimum_div10": 0.08, "extra": None}
    path = plots.plot_lr_finder(lrs, losses, smoothed, suggestions, tmp_path / "lr_finder.png")
    width, height = open_png(path).size
    assert 500 <= width <= 1200 and 350 <= height <= 900
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["loss", "smoothed loss", "steepest: 5.3e-02", "valley: 2.1e-02", "minimum_div10: 8.0e-02"]
    assert ax.get_xscale() == "log"
    marker = ax.get_lines()[2]  # the steepest point sits on the smoothed curve
    expected = np.interp(np.log10(0.0533), np.log10(lrs), smoothed)
    assert marker.get_xdata()[0] == 0.0533 and marker.get_ydata()[0] == pytest.approx(expected)


def test_lr_finder_plot_draws_the_trend_where_it_is_not_the_smoothed_loss(tmp_path, figures):
    lrs = np.geomspace(1e-5, 1.0, 60)
    raw = 2.3 - np.tanh(3 * (np.log10(lrs) + 2)) + np.random.default_rng(0).normal(0, 0.3, 60)
    trend = 2.3 - np.tanh(3 * (np.log10(lrs) + 2))
    suggestions = {"steepest": 0.0533}
    plots.plot_lr_finder(lrs, raw, raw, suggestions, tmp_path / "a.png", minimum_lr=0.1, trend_losses=trend)
    plots.plot_lr_finder(lrs, raw, trend, suggestions, tmp_path / "b.png", minimum_lr=0.1, trend_losses=trend)
    own, same = ([t.get_text() for t in figure.axes[0].get_legend().get_texts()] for figure in figures)
    assert own == ["loss", "smoothed loss", "trend (suggestions)", "steepest: 5.3e-02", "trend minimum: 1.0e-01"]
    assert same == ["loss", "smoothed loss", "steepest: 5.3e-02", "smoothed minimum: 1.0e-01"]
    marker = figures[0].axes[0].get_lines()[3]  # the suggestion sits on the trend it was read from
    assert marker.get_ydata()[0] == pytest.approx(np.interp(np.log10(0.0533), np.log10(lrs), trend))
    with pytest.raises(ValueError, match="one length; got 60, 60, 60, 59"):
        plots.plot_lr_finder(lrs, raw, raw, suggestions, tmp_path / "c.png", trend_losses=trend[:-1])


def test_lr_finder_plot_of_an_empty_or_linear_sweep(tmp_path, figures):
    open_png(plots.plot_lr_finder([], [], [], {"steepest": None}, tmp_path / "empty.png"))
    lrs = np.linspace(0.01, 1.0, 5)
    plots.plot_lr_finder(lrs, lrs, lrs, {"steepest": 0.5}, tmp_path / "linear.png", log_x=False)
    assert figures[1].axes[0].get_xscale() == "linear"
    with pytest.raises(ValueError, match="one length; got 5, 5, 4"):
        plots.plot_lr_finder(lrs, lrs, lrs[:4], {}, tmp_path / "bad.png")


def test_with_label_smoothing_each_loss_says_what_it_is(tmp_path, figures):
    plots.plot_loss(EPOCHS, tmp_path / "loss.png", label_smoothing=0.1)
    legend = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert legend == ["train (label-smoothed 0.1 cross-entropy)", "test (plain cross-entropy)"]
