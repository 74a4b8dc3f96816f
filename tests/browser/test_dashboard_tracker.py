"""What a tracker shows besides accuracy, in the browser: a run's speed (images/s, seconds per epoch),
its warnings and its worker's log while it runs; its files, model exports and model card downloaded
through an API that wants its key, byte for byte; chart controls (log y, x by epoch, step or training
time, one cursor across the charts, CSV and PNG of each chart); the new-job form marking the preset it
still holds; and every page on a laptop and a phone.
The tests run in file order and hand the jobs they made to the next through `state`."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from itertools import accumulate
from typing import Any

import pytest
from dashboard_support import LAPTOP, PHONE, goto, js_fixed, js_round, watch
from e2e_support import Stack
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATASET = {"name": "fashion_mnist", "train_subset": 300, "test_subset": 100}
FINDER = {  # as test_dashboard's: its loss falls clearly in 30 steps, so a learning rate is suggested
    "dataset": {"name": "fashion_mnist", "train_subset": 500},
    "model": {"name": "resnet18", "width": 4},
    "batch_size": 32,
    "num_iter": 30,
    "start_lr": 1e-4,
    "end_lr": 10,
    "augmentation": "none",
    "smooth_f": 0.1,
}
TINY = {
    "dataset": DATASET,
    "model": {"name": "resnet18", "width": 4},
    "epochs": 2,
    "batch_size": 64,
    "gradcam_misclassified": 0,
    "compile": "off",
}


def downloaded(page, click) -> tuple[str, bytes]:
    """(suggested name, bytes) of the download that `click()` starts."""
    with page.expect_download() as info:
        click()
    download = info.value
    with open(download.path(), "rb") as file:
        return download.suggested_filename, file.read()


def chart_csv(page, chart: str) -> list[list[str]]:
    name, data = downloaded(page, lambda: page.click(f".chart-panel:has(#{chart}) [data-tool=csv]"))
    assert name.endswith(".csv"), name
    return list(csv.reader(io.StringIO(data.decode())))


def wait_ended(page) -> None:
    page.wait_for_function(
        "() => ['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#progress .badge')?.textContent)",
        timeout=300_000,
    )


def test_a_running_job_shows_its_speed_warnings_and_log(page, stack: Stack, shoot, state) -> None:
    state["finder"] = stack.submit("lr-finder", FINDER)
    assert stack.wait(state["finder"])["status"] == "succeeded"
    # lr "auto" from a finder that ran with another dataset and batch size: the job warns of both
    auto = {**TINY, "epochs": 3, "optimizer": {"lr": "auto", "lr_finder_job": state["finder"]}, "name": "auto lr"}
    state["auto"] = job_id = stack.submit("train", auto)
    state["plain"] = stack.submit("train", {**TINY, "optimizer": {"lr": 0.05}, "name": "plain"})
    goto(page, stack, f"/jobs/{job_id}")
    page.click("#job-log summary")
    page.wait_for_function(
        "() => document.querySelector('#progress .badge')?.textContent === 'running'"
        " && Number(document.querySelector('#job-log-text').dataset.lines) > 0",
        timeout=120_000,
    )
    read_while_running = page.locator("#job-log-text").inner_text()
    assert "claimed" in read_while_running, read_while_running
    page.wait_for_function("() => Number(document.querySelector('.view').dataset.epochs) >= 1", timeout=120_000)
    shoot(page, "tracker-01-running")
    wait_ended(page)
    assert stack.get(f"/jobs/{job_id}").json()["status"] == "succeeded"

    log = stack.get(f"/jobs/{job_id}/log").text
    assert log.count("\n") > read_while_running.count("\n"), "the log grew after the panel first read it"
    page.wait_for_function("text => document.querySelector('#job-log-text').textContent === text", arg=log)

    metrics = stack.get(f"/jobs/{job_id}/metrics").json()
    assert metrics["warnings"], metrics
    page.locator("#job-warnings li").first.wait_for()
    assert page.locator("#job-warnings li").all_inner_texts() == metrics["warnings"]
    last = metrics["epochs"][-1]
    speed = page.locator("#speed-summary").inner_text()
    assert f"Epoch 3: {js_fixed(last['seconds'], 1)} s, {js_round(last['images_per_second']):,} images/s" in speed, (
        speed
    )
    rows = chart_csv(page, "chart-throughput")
    assert rows[0] == ["epoch", "images/s"]
    assert [(int(r[0]), float(r[1])) for r in rows[1:]] == [
        (e["epoch"], e["images_per_second"]) for e in metrics["epochs"]
    ]
    rows = chart_csv(page, "chart-epoch-seconds")
    assert [float(r[1]) for r in rows[1:]] == [e["seconds"] for e in metrics["epochs"]]
    page.locator("#job-warnings").scroll_into_view_if_needed()
    shoot(page, "tracker-02-warnings-speed-log")


def test_files_exports_and_the_card_download_with_the_key(
    browser, keyed_api: Stack, api_key: str, shoot, state
) -> None:
    job_id = state["auto"]
    key = {"Authorization": f"Bearer {api_key}"}
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    keyed = context.new_page()
    keyed.set_default_timeout(60_000)
    watch(keyed)
    try:
        keyed.goto(f"{keyed_api.url}/#/jobs/{job_id}")
        keyed.fill("#key-input", api_key)
        keyed.click("#key-form button[type=submit]")
        keyed.wait_for_selector("#job-files table.files")
        listed = keyed_api.get(f"/jobs/{job_id}/artifacts", headers=key).json()["artifacts"]
        names = keyed.locator("#job-files tbody tr").evaluate_all("rows => rows.map(r => r.dataset.name)")
        assert names == [a["name"] for a in listed]
        for name in ("accuracy.png", "loss_steps.json", "examples.json"):
            assert name in names, names
            saved, data = downloaded(keyed, lambda n=name: keyed.click(f'[data-download="{n}"]'))
            assert saved == name
            assert data == keyed_api.get(f"/jobs/{job_id}/artifacts/{name}", headers=key).content, name

        checkpoint = keyed_api.get(f"/jobs/{job_id}", headers=key).json()["checkpoint_id"]
        keyed.locator("#checkpoint-exports").wait_for()
        for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
            saved, data = downloaded(keyed, lambda f=fmt: keyed.click(f'[data-format="{f}"]'))
            assert saved == f"{checkpoint}{suffix}"
            api = keyed_api.get(f"/checkpoints/{checkpoint}/export?format={fmt}", headers=key)
            assert api.status_code == 200 and data == api.content, fmt
        card = keyed_api.get(f"/checkpoints/{checkpoint}/card", headers=key).text
        saved, data = downloaded(keyed, lambda: keyed.click('[data-format="card"]'))
        assert (saved, data.decode()) == (f"{checkpoint}.md", card)
        keyed.click("#model-card summary")
        keyed.wait_for_function("() => document.querySelector('#model-card-text').textContent.length > 0")
        assert keyed.locator("#model-card-text").inner_text().strip() == card.strip()

        keyed.click("#job-log summary")
        keyed.wait_for_function("() => Number(document.querySelector('#job-log-text').dataset.lines) > 0")
        saved, data = downloaded(keyed, lambda: keyed.click("#job-log button"))
        assert (saved, data) == (f"{job_id}.log", keyed_api.get(f"/jobs/{job_id}/log", headers=key).content)
        keyed.locator("#artifacts").scroll_into_view_if_needed()
        shoot(keyed, "tracker-03-files-and-exports", full_page=False)
        assert keyed.errors == [], "the page threw"
    finally:
        context.close()


def y_middle(page, chart: str) -> dict[str, float]:
    """Where the arithmetic and the geometric mean of the y range sit, as fractions of the plot's height
    from its top: a linear axis puts the first at 0.5, a log axis the second."""
    return page.locator(f"#{chart}").evaluate(
        """box => {
          const u = box.uplot, {min, max} = u.scales.y, height = u.bbox.height / devicePixelRatio;
          return {arithmetic: u.valToPos((min + max) / 2, 'y') / height,
                  geometric: u.valToPos(Math.sqrt(min * max), 'y') / height, distr: u.scales.y.distr};
        }"""
    )


def test_chart_controls_log_y_x_axis_synced_cursor_csv_and_png(page, stack: Stack, shoot, state) -> None:
    job_id = state["auto"]
    metrics = stack.get(f"/jobs/{job_id}/metrics").json()
    epochs = metrics["epochs"]
    goto(page, stack, f"/jobs/{job_id}")
    page.wait_for_selector("#per-class .bar-row")

    rows = chart_csv(page, "chart-accuracy")  # the series it draws, at full precision
    assert rows[0] == ["epoch", "train", "test"]
    assert [[float(v) for v in row] for row in rows[1:]] == [
        [e["epoch"], e["train_acc"], e["test_acc"]] for e in epochs
    ]

    log_button = page.locator(".chart-panel:has(#chart-loss) [data-tool=log]")
    for _ in range(2):  # whichever it starts with (a loss spanning 20x starts on a log axis), then the other
        on = log_button.get_attribute("aria-pressed") == "true"
        middle = y_middle(page, "chart-loss")
        assert middle["distr"] == (3 if on else 1)
        assert math.isclose(middle["geometric" if on else "arithmetic"], 0.5, abs_tol=0.01), middle
        assert not math.isclose(middle["arithmetic" if on else "geometric"], 0.5, abs_tol=0.01), middle
        log_button.click()
        assert log_button.get_attribute("aria-pressed") == str(not on).lower()

    per_epoch = len(stack.get(f"/jobs/{job_id}/artifacts/lr_steps.json").json()) // len(epochs)
    page.click("#x-axis [data-mode=step]")
    rows = chart_csv(page, "chart-accuracy")
    assert rows[0][0] == "step" and [int(r[0]) for r in rows[1:]] == [e["epoch"] * per_epoch for e in epochs]
    page.click("#x-axis [data-mode=time]")
    rows = chart_csv(page, "chart-loss")
    ends = list(accumulate(e["seconds"] for e in epochs))
    assert rows[0][0] == "training time (s)"
    assert [float(r[0]) for r in rows[1:]] == pytest.approx(ends)
    steps = chart_csv(page, "chart-step-loss")  # per-step points on the same clock: within the run's time
    assert 0 < float(steps[1][0]) < float(steps[-1][0]) <= ends[-1] + 1e-6
    shoot(page, "tracker-04-time-axis")
    page.click("#x-axis [data-mode=epoch]")

    # one cursor: hovering the accuracy chart moves the loss chart's, to the same epoch
    over = page.locator("#chart-accuracy .u-over")
    box = over.bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] * 0.98, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "() => !document.querySelector('#chart-loss .u-cursor-x').classList.contains('u-off')"
        " && document.querySelector('#chart-loss .u-legend .u-series .u-value').textContent.trim() === '3'"
    )
    legend = "#{} .u-legend .u-series .u-value"
    assert page.locator(legend.format("chart-accuracy")).first.inner_text() == "3"
    assert page.locator(legend.format("chart-lr")).first.inner_text() == "3"  # per step: the epoch's last step
    shoot(page, "tracker-05-synced-cursor", full_page=False)

    name, data = downloaded(page, lambda: page.click(".chart-panel:has(#chart-loss) [data-tool=png]"))
    image = Image.open(io.BytesIO(data))
    canvas = page.locator("#chart-loss canvas").evaluate("c => [c.width, c.height]")
    assert name == "loss.png" and image.format == "PNG" and image.width == canvas[0] and image.height > canvas[1]
    colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours and len(colours) > 10, "the plot, not a blank image"


def test_the_form_marks_the_preset_it_still_holds(page, stack: Stack, shoot) -> None:
    goto(page, stack, "/new")
    page.wait_for_selector("#spec-editor")
    pressed = ".presets button[aria-pressed='true']"
    first = page.locator(".presets button").first.get_attribute("data-preset")
    assert page.locator(pressed).get_attribute("data-preset") == first
    epochs = page.locator('[data-field="epochs"] input')
    held = epochs.input_value()
    epochs.fill(str(int(held) + 1))
    epochs.dispatch_event("change")
    assert page.locator(pressed).count() == 0, "edited away from the preset: no longer marked"
    assert "edited" in page.locator("#run-summary").inner_text()
    epochs.fill(held)
    epochs.dispatch_event("change")
    assert page.locator(pressed).get_attribute("data-preset") == first, "its values again: marked again"
    assert "edited" not in page.locator("#run-summary").inner_text()
    second = page.locator(".presets button").nth(1)
    second.click()
    assert page.locator(pressed).get_attribute("data-preset") == second.get_attribute("data-preset")
    spec = json.loads(page.locator("#spec-editor").input_value())
    page.locator("#spec-editor").fill(json.dumps({**spec, "seed": 7}))
    assert page.locator(pressed).count() == 0, "the JSON editor edits away from it too"

    # a 422: its summary and Start stay in view, at the bottom of the viewport
    page.locator('[data-field="batch_size"] input').fill("0")
    page.click("#submit")
    page.locator("#error-summary .error").wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    viewport = page.viewport_size
    for selector in ("#submit", "#error-summary .error"):
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], selector
    shoot(page, "tracker-06-form-error-in-view", full_page=False)


def page_ready(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        ("/jobs", "table.jobs tbody tr[data-job]", "jobs"),
        ("/new", "#spec-editor", "new-job"),
        (f"/jobs/{state['auto']}", "#per-class .bar-row", "training-job"),
        (f"/jobs/{state['finder']}", "#chart-lr-finder canvas", "lr-finder-job"),
        (f"/compare?ids={state['auto']},{state['plain']}", "#compare-test_acc canvas", "compare"),
        ("/predict", ".drop", "predict"),
        ("/datasets", "h1", "datasets"),
    ]


@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_every_page_fits_a_laptop_and_a_phone(browser, stack: Stack, shoot, state, device) -> None:
    assert stack.wait(state["plain"])["status"] == "succeeded"
    phone = device == "phone"
    context = browser.new_context(
        viewport=PHONE if phone else LAPTOP, device_scale_factor=2 if phone else 1, is_mobile=phone
    )
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    watch(opened)
    try:
        for index, (route, ready, name) in enumerate(page_ready(state), start=1):
            opened.goto(f"{stack.url}/#{route}")
            opened.wait_for_selector(ready)
            opened.wait_for_load_state("networkidle")
            overflow = opened.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{route} is {overflow}px wider than the {device}"
            shoot(opened, f"tracker-pages-{device}-{index:02d}-{name}")
        assert opened.errors == [], "the page threw"
    finally:
        context.close()


def test_compare_charts_share_a_cursor_and_save_csv(page, stack: Stack, state) -> None:
    ids = [state["auto"], state["plain"]]
    goto(page, stack, f"/compare?ids={','.join(ids)}")
    page.wait_for_selector("#compare-test_loss canvas")
    rows = chart_csv(page, "compare-test_acc")
    assert rows[0] == ["epoch", "auto lr", "plain"]
    accuracies = [[e["test_acc"] for e in stack.get(f"/jobs/{i}/metrics").json()["epochs"]] for i in ids]
    assert [float(r[1]) for r in rows[1:]] == accuracies[0]
    assert [float(r[2]) for r in rows[1:] if r[2]] == accuracies[1]
    box = page.locator("#compare-test_acc .u-over").bounding_box()
    assert box
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "() => document.querySelector('#compare-train_loss .u-legend .u-series .u-value').textContent.trim() === '1'"
    )
    assert re.fullmatch(
        r"\d+(\.\d+)?%", page.locator("#compare-train_acc .u-legend .u-series .u-value").nth(1).inner_text()
    )

    # on the training-time axis, each run's epochs sit at the end of their training seconds
    page.click("#compare-x-axis [data-mode=time]")
    rows = chart_csv(page, "compare-test_acc")
    epochs = [stack.get(f"/jobs/{i}/metrics").json()["epochs"] for i in ids]
    ends = [list(accumulate(e["seconds"] for e in run)) for run in epochs]
    assert rows[0] == ["training time (s)", "auto lr", "plain"]
    assert [float(r[0]) for r in rows[1:]] == pytest.approx(sorted(set(ends[0] + ends[1])))
    for column, (run, at) in enumerate(zip(epochs, ends, strict=True), start=1):
        drawn = {round(float(r[0]), 6): float(r[column]) for r in rows[1:] if r[column]}
        assert drawn == {round(x, 6): e["test_acc"] for x, e in zip(at, run, strict=True)}
    page.click("#compare-x-axis [data-mode=epoch]")
    assert chart_csv(page, "compare-test_acc")[0][0] == "epoch"
