"""Attention over training in the browser: a tiny finished job's page shows a strip per probe image
with its map at each epoch, a slider that moves the large maps and their predictions to another
epoch (checked against GET /jobs/{id}/explanations), the drift chart beside the accuracy chart;
Compare shows the same probe image side by side for two jobs with the same probes; Predict shows the
checkpoint's faithfulness scores beside the method. The tests run in file order and hand the jobs
they made to the next through `state`."""

from __future__ import annotations

from typing import Any

import pytest
from dashboard_support import js_fixed
from e2e_support import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {  # two epochs on 300 images: maps that move between them
    "dataset": {"name": "fashion_mnist", "train_subset": 300, "test_subset": 200},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 2,
    "batch_size": 32,
    "gradcam_misclassified": 0,
    "compile": "off",
}


def large_captions(page) -> list[tuple[str, float]]:
    """(class, percent) of each large map's caption, "Pullover · 16.3%"."""
    texts = page.locator("#probe-strips .probe-large figcaption .pred").all_inner_texts()
    return [(name, float(percent.rstrip("%"))) for name, percent in (text.split(" · ") for text in texts)]


def expected_captions(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """The API's (class, confidence) as the page rounds it: to 0.1 (JavaScript's toFixed may round a
    half the other way from Python's format, hence the tolerance)."""
    return [(p["pred_class"], pytest.approx(100 * p["confidence"], abs=0.051)) for p in body["probes"]]


def test_the_job_page_shows_the_probe_strips_the_slider_and_the_drift(page, stack: Stack, shoot, state) -> None:
    job_id = stack.submit("train", TINY)
    other = stack.submit("train", TINY | {"optimizer": {"lr": 0.01}})  # same dataset and seed: same probes
    assert stack.wait(job_id)["status"] == "succeeded"
    state["jobs"] = [job_id, other]
    latest = stack.get(f"/jobs/{job_id}/explanations").json()
    first = stack.get(f"/jobs/{job_id}/explanations?epoch=1").json()
    assert latest["epochs"] == [1, 2] and len(latest["probes"]) == 20
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#probe-strips')?.dataset.epoch === '2'")
    strips = page.locator("#probe-strips .probe-strip")
    assert strips.count() == 20
    assert strips.evaluate_all("s => s.map(e => Number(e.dataset.index))") == [p["index"] for p in latest["probes"]]
    assert strips.first.locator(".probe-thumb").count() == 2  # its map at each epoch
    assert large_captions(page) == expected_captions(latest)
    assert page.locator("#probe-epoch-label").inner_text() == "2 of 2"
    page.wait_for_function("() => [...document.querySelectorAll('#probe-strips img')].every(i => i.naturalWidth > 0)")

    slider = page.locator("#probe-epoch")
    slider.focus()
    page.keyboard.press("ArrowLeft")  # to epoch 1, as a person moves it
    page.wait_for_function("() => document.querySelector('#probe-strips').dataset.epoch === '1'")
    assert large_captions(page) == expected_captions(first)
    assert page.locator("#probe-epoch-label").inner_text() == "1 of 2"
    pressed = strips.first.locator(".probe-thumb[aria-pressed='true']")
    assert pressed.get_attribute("data-epoch") == "1"
    large = strips.first.locator(".probe-large img.heat").get_attribute("src")
    assert large == first["probes"][0]["heatmap"]

    drifts = [e["attention_drift"] for e in stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]]
    assert drifts[0] is None and -1 <= drifts[1] <= 1
    drift = page.locator("#chart-drift")
    assert "Attention drift" in drift.inner_text()
    assert drift.locator("canvas").count() == 1
    boxes = [page.locator(f"#{name}").bounding_box() for name in ("chart-accuracy", "chart-drift")]
    assert boxes[0] and boxes[1] and abs(boxes[0]["y"] - boxes[1]["y"]) < 2  # side by side
    page.locator("#attention").scroll_into_view_if_needed()
    shoot(page, "attention-01-job-page")


def test_compare_shows_the_same_probe_side_by_side(page, stack: Stack, shoot, state) -> None:
    assert "jobs" in state, "needs the jobs of the previous test"
    job_id, other = state["jobs"]
    assert stack.wait(other)["status"] == "succeeded"
    page.goto(f"{stack.url}/#/compare?ids={job_id},{other}")
    section = page.locator("#compare-probes")
    section.wait_for()
    rows = section.locator(".probe-compare")
    assert rows.count() == 20
    first = rows.first
    assert first.locator("figure[data-job]").evaluate_all("fs => fs.map(f => f.dataset.job)") == [job_id, other]
    theirs = stack.get(f"/jobs/{other}/explanations").json()["probes"][0]
    assert first.locator(f"figure[data-job='{other}'] img.heat").get_attribute("src") == theirs["heatmap"]
    section.scroll_into_view_if_needed()
    shoot(page, "attention-02-compare", full_page=False)


def test_predict_shows_the_checkpoints_faithfulness_beside_the_method(page, stack: Stack, shoot, state) -> None:
    assert "jobs" in state, "needs the jobs of the previous test"
    job_id = state["jobs"][0]
    job = stack.get(f"/jobs/{job_id}").json()
    scores = stack.get(f"/jobs/{job_id}/metrics").json()["faithfulness"]
    page.goto(f"{stack.url}/#/predict?checkpoint={job['checkpoint_id']}")
    page.wait_for_function("() => document.querySelector('#faithfulness')?.textContent.includes('GradCAM++')")
    text = page.locator("#faithfulness").inner_text()
    assert (
        f"GradCAM {js_fixed(scores['gradcam'], 3)}" in text and f"GradCAM++ {js_fixed(scores['gradcam++'], 3)}" in text
    )
    better = "GradCAM++" if scores["gradcam++"] > scores["gradcam"] else "GradCAM"
    assert page.locator("#faithfulness strong").inner_text().startswith(f"{better} ")
    shoot(page, "attention-03-predict", full_page=False)
