"""The new-job form and the LR-finder page tell the truth, in a real browser against the real stack: the
form's essentials first and the rest under "Advanced", Start blocked while the JSON does not parse, an
LR finder drawn live and clipped as its PNG is, in the PNG's colours, "Train with this LR" starting
from the whole preset it was measured for (and saying so above Start), and a larger view that is larger.
The tests run in file order and hand the LR-finder job to the next through `state`."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from dashboard_support import field, goto, job_id_of
from e2e_support import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The fashion_mnist_cpu preset's dataset, model, batch size and augmentation (so "train with this LR"
# finds it), on 300 images and 40 iterations: seconds on a CPU.
SWEEP = {"train_subset": 300, "num_iter": 40, "start_lr": 1e-4, "end_lr": 10, "smooth_f": 0.05}
PNG_COLORS = {"steepest": "rgb(255, 127, 14)", "valley": "rgb(44, 160, 44)", "minimum_div10": "rgb(214, 39, 40)"}


def spec_in_editor(page) -> dict[str, Any]:
    return json.loads(page.locator("#spec-editor").input_value())


def test_essentials_first_and_start_blocked_while_the_json_does_not_parse(page, stack: Stack, shoot) -> None:
    goto(page, stack, "/new")
    page.wait_for_selector("#spec-editor")
    essentials = page.locator("fieldset.essentials [data-field]")
    paths = [essentials.nth(i).get_attribute("data-field") for i in range(essentials.count())]
    assert paths[:4] == ["dataset.name", "dataset.id", "dataset.train_subset", "dataset.test_subset"], paths
    assert {"epochs", "optimizer.lr", "scheduler.name"} <= set(paths) and "seed" not in paths
    assert not page.locator("details.advanced").evaluate("d => d.open"), "the rest starts collapsed"
    assert field(page, "seed").count() == 1 and not field(page, "seed").is_visible()
    first = page.locator(".presets button").first
    assert first.get_attribute("aria-pressed") == "true", "the preset the form started from is marked"
    assert "5 epochs" in page.locator("#run-summary").inner_text()

    page.locator("#spec-editor").fill('{"dataset": {"name": "fashion_mnist"}, "epochs": 3,')
    assert page.locator("#submit").is_disabled()
    note = page.locator("#json-error").inner_text()
    assert "does not parse" in note and "JSON" in note, note
    page.evaluate("window.scrollTo(0, 0)")
    box, viewport = page.locator("#submit").bounding_box(), page.viewport_size
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], "Start stays in view (sticky)"
    shoot(page, "form-01-json-does-not-parse", full_page=False)
    page.locator("#spec-editor").fill('{"dataset": {"name": "fashion_mnist"}, "epochs": 3}')
    assert not page.locator("#submit").is_disabled() and page.locator("#json-error").inner_text() == ""
    assert field(page, "epochs").locator("input").input_value() == "3"
    assert page.locator("#run-summary").inner_text().startswith("3 epochs")

    page.click(".presets button >> nth=1")
    assert page.locator(".presets button").nth(1).get_attribute("aria-pressed") == "true"
    assert first.get_attribute("aria-pressed") == "false"

    goto(page, stack, "/new?kind=lr_finder")
    page.wait_for_selector('[data-field="num_iter"]')
    page.click(".presets button >> nth=0")
    preset_note = page.locator("#preset-note").inner_text()
    assert "range test" in preset_note and "epochs of OneCycle" not in preset_note, preset_note


def test_an_lr_finder_drawn_live_and_clipped_like_its_png(page, stack: Stack, shoot, state) -> None:
    goto(page, stack, "/new?kind=lr_finder&preset=fashion_mnist_cpu")
    page.wait_for_selector('[data-field="num_iter"]')
    spec = spec_in_editor(page)
    assert spec["model"] == {"name": "custom_resnet", "width": 8} and spec["label_smoothing"] == 0.1
    spec["dataset"]["train_subset"] = SWEEP["train_subset"]
    spec.update({k: v for k, v in SWEEP.items() if k != "train_subset"})
    page.locator("#spec-editor").fill(json.dumps(spec))
    page.click("#submit")
    job_id = state["lr_finder"] = job_id_of(page)

    live_seen, deadline = [], time.monotonic() + 240
    while (status := page.locator("#progress .badge").inner_text()) not in ("succeeded", "failed", "cancelled"):
        if status == "running" and page.locator("#lr-live canvas").count():
            live_seen.append(page.locator("#lr-extent").inner_text())
            if len(live_seen) == 1:
                shoot(page, "form-02-lr-finder-live")
        assert time.monotonic() < deadline, f"still {status} after 240 s"
        page.wait_for_timeout(150)
    assert status == "succeeded", page.locator("#progress").inner_text()
    assert any(re.match(r"iteration \d+ of 40", text) for text in live_seen), f"never drawn live: {live_seen}"
    page.wait_for_selector("#train-with-lr")
    metrics = stack.get(f"/jobs/{job_id}/metrics").json()

    values = metrics["smoothed_losses"] + metrics["trend_losses"]  # plot_lr_finder's y range
    low, high = min(values), max(values)
    span = high - low or abs(high) or 1.0
    chart = page.locator("#chart-lr-finder")
    page.wait_for_function("() => document.querySelector('#chart-lr-finder').dataset.yMax !== undefined")
    y_min, y_max = float(chart.get_attribute("data-y-min")), float(chart.get_attribute("data-y-max"))
    assert y_min == pytest.approx(low - 0.1 * span) and y_max == pytest.approx(high + 0.1 * span)
    if max(metrics["losses"]) > y_max:
        assert y_max < max(metrics["losses"]), "the raw loss's spike is cut off"
    labels = json.loads(page.locator("#chart-lr-finder .uplot").get_attribute("data-labels"))
    for i, (x0, x1, row) in enumerate(labels):
        for other_x0, other_x1, other_row in labels[i + 1 :]:
            assert row != other_row or x1 <= other_x0 or other_x1 <= x0, f"labels overlap: {labels}"
    for row in page.locator(".suggestions tbody tr").all():
        name = row.locator("td").first.inner_text().strip()
        colour = row.locator(".swatch").evaluate("s => getComputedStyle(s).backgroundColor")
        assert colour == PNG_COLORS[name], (name, colour)

    done, planned = len(metrics["lrs"]), SWEEP["num_iter"]
    extent = page.locator("#lr-extent").inner_text()
    progress = page.locator(".progress-text").inner_text()
    if metrics["stop_reason"] != "completed":
        said = f"stopped at iteration {done} of {planned} ({metrics['stop_reason']})"
        assert said in extent and said in progress, (extent, progress)
    else:
        assert f"all {done} iterations" in extent and f"step {done} / {planned}" in progress
    shoot(page, "form-03-lr-finder-done")


def test_the_larger_view_is_larger_and_its_close_button_covers_nothing(page, stack: Stack, shoot, state) -> None:
    assert "lr_finder" in state, "needs the LR-finder job of the previous test"
    page.click("details.card > summary")
    inline = page.locator("img.artifact")
    page.wait_for_function("() => document.querySelector('img.artifact').naturalWidth > 0")
    inline_width = inline.bounding_box()["width"]
    natural = inline.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    inline.click()
    page.wait_for_function("() => document.querySelector('#lightbox-img').getBoundingClientRect().width > 0")
    image = page.locator("#lightbox-img").bounding_box()
    close = page.locator("#lightbox .close").bounding_box()
    viewport = page.viewport_size
    assert image["width"] >= inline_width, (image, inline_width)
    if natural[0] <= 0.95 * viewport["width"] and natural[1] <= 0.9 * viewport["height"] - 48:
        assert image["width"] >= natural[0] - 1, (image, natural)
    assert image["width"] <= 0.95 * viewport["width"] + 1 and image["height"] <= 0.9 * viewport["height"]
    assert close["y"] + close["height"] <= image["y"] + 1, "the close button sits above the image"
    shoot(page, "form-04-larger-view", full_page=False)
    page.keyboard.press("Escape")


def test_train_with_this_lr_starts_from_the_preset_and_says_so(page, stack: Stack, shoot, state) -> None:
    assert "lr_finder" in state, "needs the LR-finder job of the previous test"
    goto(page, stack, f"/jobs/{state['lr_finder']}")
    page.click("#train-with-lr")
    page.wait_for_selector("#run-summary")
    summary = page.locator("#run-summary").inner_text()
    for words in (
        "5 epochs",
        "one_cycle",
        "peak = the suggested lr",
        "label smoothing 0.1",
        "test-time flip on",
        "from preset fashion_mnist_cpu",
    ):
        assert words in summary, summary
    spec = spec_in_editor(page)
    assert spec["epochs"] == 5 and spec["label_smoothing"] == 0.1 and spec["test_time_flip"] is True
    assert spec["scheduler"]["name"] == "one_cycle" and "max_lr" not in spec["scheduler"]
    assert spec["optimizer"]["lr"] == "auto" and spec["optimizer"]["lr_finder_job"] == state["lr_finder"]
    assert spec["dataset"]["train_subset"] == SWEEP["train_subset"]  # the finder's dataset, subsets and all
    assert page.locator(".presets button[aria-pressed='true']").count() == 0
    field(page, "epochs").locator("input").fill("2")
    assert page.locator("#run-summary").inner_text().startswith("2 epochs")
    assert "edited" in page.locator("#run-summary").inner_text()
    shoot(page, "form-05-train-with-this-lr")
