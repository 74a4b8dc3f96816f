"""The test examples of a finished training job in the browser: tiles of GradCAM overlays paged and
sorted, filtered by class, a confusion-matrix cell that shows exactly its images, and a tile's larger
view. Every set of tiles on the page is checked against the API's answer for the same question.
The tests run in file order and hand the job they made to the next through `state`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from dashboard_support import js_fixed
from e2e_support import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {  # one epoch on 300 images: a model that still makes plenty of mistakes
    "dataset": {"name": "fashion_mnist", "train_subset": 300, "test_subset": 200},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 1,
    "batch_size": 32,
    "gradcam_misclassified": 4,
    "compile": "off",
}
PAGE = 50  # tiles a page (js/examples.js)


def api_indices(stack: Stack, job_id: str, **query: Any) -> tuple[list[int], int]:
    """The indices of the API's page for `query` (the page's defaults otherwise) and its total."""
    params = {"kind": "misclassified", "sort": "-confidence", "limit": PAGE, "offset": 0} | query
    body = stack.get(f"/jobs/{job_id}/examples?{urlencode(params)}").json()
    return [e["index"] for e in body["examples"]], body["total"]


def tiles_become(page, indices: list[int]) -> None:
    """Wait until the tiles shown are exactly `indices`, in that order."""
    page.wait_for_function(
        "expected => document.querySelector('#example-tiles')?.dataset.indices === expected"
        " && !document.querySelector('#example-tiles').hasAttribute('aria-busy')",
        arg=",".join(map(str, indices)),
    )
    shown = page.locator("#example-tiles figure").evaluate_all("fs => fs.map(f => Number(f.dataset.index))")
    assert shown == indices


def test_a_finished_job_shows_its_mistakes_as_tiles_and_pages_through_them(page, stack: Stack, shoot, state) -> None:
    job_id = stack.submit("train", TINY)
    assert stack.wait(job_id)["status"] == "succeeded"
    state["job"] = job_id
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    first, wrong = api_indices(stack, job_id)
    assert wrong > 0, "a one-epoch model makes mistakes"
    tiles_become(page, first)
    assert page.locator("#examples-range").inner_text() == f"1–{min(PAGE, wrong)} of {wrong}"
    top = stack.get(f"/jobs/{job_id}/examples?limit=1").json()["examples"][0]
    caption = page.locator("#example-tiles figure").first.locator("figcaption").inner_text()
    assert top["true_class"] in caption and top["pred_class"] in caption
    assert f"{js_fixed(100 * top['confidence'], 1)}%" in caption
    page.wait_for_function("() => document.querySelector('#example-tiles img')?.naturalWidth === 96")
    assert page.locator("#galleries .tabs button[data-name='gradcam_misclassified.png']").count() == 1  # grids stay
    shoot(page, "examples-01-tiles")

    page.select_option("#examples-kind", "all")
    everything, total = api_indices(stack, job_id, kind="all")
    assert total == 200
    tiles_become(page, everything)
    assert page.locator("#examples-prev").is_disabled()
    page.click("#examples-next")
    tiles_become(page, api_indices(stack, job_id, kind="all", offset=PAGE)[0])
    assert page.locator("#examples-range").inner_text() == f"{PAGE + 1}–{2 * PAGE} of 200"
    page.click("#examples-prev")
    tiles_become(page, everything)

    page.select_option("#examples-sort", "confidence")
    least = api_indices(stack, job_id, kind="all", sort="confidence")[0]
    tiles_become(page, least)
    assert least != everything


def test_filter_by_class_and_click_a_confusion_cell(page, stack: Stack, shoot, state) -> None:
    assert "job" in state, "needs the job of the previous test"
    job_id = state["job"]
    page.select_option("#examples-kind", "misclassified")
    page.select_option("#examples-true", "Shirt")
    shirts, total = api_indices(stack, job_id, sort="confidence", true_class="Shirt")
    tiles_become(page, shirts)
    assert page.locator("#examples-range").inner_text().endswith(f"of {total}")
    assert all("Shirt" in t for t in page.locator("#example-tiles .true").all_inner_texts())

    cells = stack.get(f"/jobs/{job_id}/confusion").json()
    classes, confusion = cells["classes"], cells["confusion"]
    assert page.locator("#confusion-table button.cell").count() == len(classes) ** 2
    count, i, j = max((confusion[i][j], i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j)
    assert count > 0
    cell = page.locator(f'#confusion-table button.cell[data-true="{classes[i]}"][data-pred="{classes[j]}"]')
    assert cell.inner_text() == str(count)
    cell.click()
    expected, matching = api_indices(
        stack, job_id, kind="all", sort="confidence", true_class=classes[i], pred_class=classes[j]
    )
    assert matching == count
    tiles_become(page, expected)
    assert page.locator("#examples-true").input_value() == classes[i]
    assert page.locator("#examples-pred").input_value() == classes[j]
    assert page.locator("#examples-kind").input_value() == "all"
    assert cell.get_attribute("aria-pressed") == "true"
    assert page.locator('#confusion-table button.cell[aria-pressed="true"]').count() == 1
    assert page.locator("#examples-range").inner_text() == f"1–{min(count, PAGE)} of {count}"
    shoot(page, "examples-02-confusion-cell")

    page.locator("#example-tiles figure.zoom").first.click()
    assert page.locator("#lightbox").evaluate("d => d.open")
    assert classes[i] in page.locator("#lightbox-caption").inner_text()
    page.wait_for_function("() => document.querySelector('#lightbox-img').naturalWidth === 96")
    shoot(page, "examples-03-larger-view", full_page=False)
    page.keyboard.press("Escape")
    page.click("#examples-clear")
    tiles_become(page, api_indices(stack, job_id, kind="all", sort="confidence")[0])
    assert page.locator('#confusion-table button.cell[aria-pressed="true"]').count() == 0
