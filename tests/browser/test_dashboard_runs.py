"""Runs a person can find, name and clean up, in the browser: three tiny named and tagged training
jobs, the queued one's place in line, filtering by tag and searching (back and forward too), sorting
by best accuracy as the API does, renaming a run in place, comparing the three (names in legends,
per-class accuracy, parallel coordinates) and deleting one with its files.
The tests run in file order and hand the jobs they made to the next through `state`."""

from __future__ import annotations

import re

import pytest
from dashboard_support import goto
from e2e_support import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAG = "runs-test"
TINY = {
    "dataset": {"name": "fashion_mnist", "train_subset": 300, "test_subset": 100},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 2,
    "batch_size": 64,
    "gradcam_misclassified": 0,
    "compile": "off",
}
RUNS = {
    "alpha": {**TINY, "optimizer": {"lr": 0.05}, "name": "alpha baseline", "tags": [TAG, "baseline"]},
    "beta": {
        **TINY,
        "model": {"name": "resnet18", "width": 8},
        "optimizer": {"lr": 0.1, "weight_decay": 0.001},
        "name": "beta wide",
        "tags": [TAG, "wide"],
        "note": "twice the width",
    },
    "gamma": {
        **TINY,
        "epochs": 1,
        "optimizer": {"lr": 0.02},
        "label_smoothing": 0.1,
        "name": "gamma short",
        "tags": [TAG],
    },
}


def rows(page) -> list[str]:
    return page.locator("table.jobs tbody tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")


def wait_rows(page, expected: list[str]) -> None:
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('table.jobs tbody tr[data-job]')]"
        ".map(r => r.dataset.job)) === JSON.stringify(ids)",
        arg=expected,
    )


def test_queued_jobs_show_their_place_in_line(page, stack: Stack, shoot, state) -> None:
    state.update({key: stack.submit("train", spec) for key, spec in RUNS.items()})
    goto(page, stack, f"/jobs?tag={TAG}")
    wait_rows(page, [state["gamma"], state["beta"], state["alpha"]])
    gamma = stack.get(f"/jobs/{state['gamma']}").json()  # one worker, one job at a time: gamma waits
    assert gamma["status"] == "queued" and gamma["queue_position"] in (1, 2, 3), gamma
    cell = page.locator(f'tr[data-job="{state["gamma"]}"] .queue')
    assert re.fullmatch(r"· #[123] in line", cell.inner_text().strip()), cell.inner_text()
    assert page.locator(f'tr[data-job="{state["beta"]}"] .chip').all_inner_texts() == [TAG, "wide"]
    shoot(page, "runs-01-queued")
    for job_id in (state["alpha"], state["beta"], state["gamma"]):
        assert stack.wait(job_id, timeout=400)["status"] == "succeeded"


def test_filter_by_tag_and_search_live_in_the_url(page, stack: Stack, shoot, state) -> None:
    goto(page, stack, "/jobs")
    wait_rows(page, [state["gamma"], state["beta"], state["alpha"]])
    page.fill('input[name="tag"]', "wide")
    page.press('input[name="tag"]', "Enter")
    page.wait_for_url(re.compile(r"tag=wide"))
    wait_rows(page, [state["beta"]])
    page.fill("#jobs-search", "GAMMA")
    page.press("#jobs-search", "Enter")  # searched within the tag: nothing
    page.wait_for_url(re.compile(r"q=GAMMA"))
    page.locator("text=No job matches these filters").wait_for()
    page.fill('input[name="tag"]', "")
    page.press('input[name="tag"]', "Enter")
    wait_rows(page, [state["gamma"]])
    assert "tag=" not in page.url
    page.select_option('select[name="model"]', "resnet18")
    wait_rows(page, [state["gamma"]])
    shoot(page, "runs-02-search")
    page.go_back()  # back through the filters
    page.wait_for_url(lambda url: "model=" not in url and "q=GAMMA" in url)
    page.go_back()
    wait_rows(page, [])
    page.go_back()
    page.wait_for_url(lambda url: url.endswith("tag=wide"))
    wait_rows(page, [state["beta"]])
    page.locator(f'tr[data-job="{state["beta"]}"] a.chip', has_text=TAG).click()  # a chip filters by its tag
    wait_rows(page, [state["gamma"], state["beta"], state["alpha"]])


def test_sort_by_best_accuracy_as_the_api_does(page, stack: Stack, shoot, state) -> None:
    goto(page, stack, f"/jobs?tag={TAG}")
    wait_rows(page, [state["gamma"], state["beta"], state["alpha"]])
    page.click('th[data-sort="best"] a')
    page.wait_for_url(re.compile(r"sort=best"))
    by_api = [job["id"] for job in stack.get(f"/jobs?tag={TAG}&sort=best").json()["jobs"]]
    wait_rows(page, by_api)
    best = [stack.get(f"/jobs/{job_id}").json()["best"]["test_acc"] for job_id in by_api]
    assert best == sorted(best, reverse=True)
    assert page.locator('th[data-sort="best"]').get_attribute("aria-sort") == "descending"
    page.click('th[data-sort="best"] a')  # again: the other way
    page.wait_for_url(re.compile(r"sort=-best"))
    wait_rows(page, [job["id"] for job in stack.get(f"/jobs?tag={TAG}&sort=-best").json()["jobs"]])
    page.click('th[data-sort="name"] a')
    wait_rows(page, [state["alpha"], state["beta"], state["gamma"]])
    shoot(page, "runs-03-sorted")


def test_rename_a_run_in_place(page, stack: Stack, shoot, state) -> None:
    goto(page, stack, f"/jobs/{state['alpha']}")
    assert page.locator("#run-title").inner_text() == "alpha baseline"
    page.click("#run-edit")
    page.fill("#run-name-input", "alpha renamed")
    page.fill("#run-tags-input", f"{TAG}, baseline, renamed, baseline")
    page.fill("#run-note-input", "the first of three")
    page.click("#run-save")
    page.wait_for_function("() => document.querySelector('#run-title')?.textContent === 'alpha renamed'")
    job = stack.get(f"/jobs/{state['alpha']}").json()
    assert (job["name"], job["tags"], job["note"]) == (
        "alpha renamed",
        [TAG, "baseline", "renamed"],
        "the first of three",
    )
    assert page.locator("#run-tags .chip").all_inner_texts() == [TAG, "baseline", "renamed"]
    page.click("#run-edit")
    page.evaluate("() => document.querySelector('#run-name-input').removeAttribute('maxlength')")  # the API says why
    page.fill("#run-name-input", "x" * 101)
    page.click("#run-save")
    error = page.locator("#run-labels-form .error")
    assert "name: String should have at most 100 characters" in error.inner_text()
    shoot(page, "runs-04-rename-error")
    page.locator("#run-labels-form button", has_text="Cancel").click()
    assert stack.get(f"/jobs/{state['alpha']}").json()["name"] == "alpha renamed"
    shoot(page, "runs-05-renamed")


def test_compare_three_runs_by_name(page, stack: Stack, shoot, state) -> None:
    ids = [state["alpha"], state["beta"], state["gamma"]]
    names = ["alpha renamed", "beta wide", "gamma short"]
    goto(page, stack, f"/compare?ids={','.join(ids)}")
    page.wait_for_selector("#compare-test_acc canvas")
    page.wait_for_selector("#parallel-coords")
    painted = page.locator("#parallel-coords").evaluate(
        "c => c.width > 0 && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0)"
    )
    assert painted, "the parallel coordinates are drawn"
    assert [t.strip() for t in page.locator("#parallel-legend li").all_inner_texts()] == names
    assert [t.strip() for t in page.locator("#per-class thead th").all_text_contents()] == ["class", *names]
    classes = page.locator("#per-class tbody tr").count()
    assert classes == 10, classes  # Fashion-MNIST's ten
    legend = page.locator("#compare-test_acc .u-legend").inner_text()
    assert all(name in legend for name in names), legend
    page.wait_for_selector("#compare-lr-steps canvas")  # the LR per step of each run
    assert all(name in page.locator("#compare-lr-steps .u-legend").inner_text() for name in names)
    assert [t.strip() for t in page.locator(".spec-compare thead th").all_text_contents()] == ["field", *names]
    shoot(page, "runs-06-compare")


def test_delete_a_finished_run_and_its_files(page, stack: Stack, shoot, state) -> None:
    alpha = state["alpha"]
    folder = stack.tmp / "artifacts" / alpha
    assert folder.is_dir()
    goto(page, stack, f"/jobs/{alpha}")
    page.click("#run-delete")
    page.wait_for_selector("#delete-dialog[open]")
    assert "alpha renamed" in page.locator("#delete-dialog").inner_text()
    shoot(page, "runs-07-delete-confirm", full_page=False)
    page.click("#delete-confirm")
    page.wait_for_url(re.compile(r"#/jobs$"))
    wait_rows(page, [state["gamma"], state["beta"]])
    assert stack.get(f"/jobs/{alpha}").status_code == 404
    assert not folder.exists()
    # gamma finished last: its checkpoint is the latest one, which the page deletes only when told twice
    goto(page, stack, f"/jobs/{state['gamma']}")
    page.click("#run-delete")
    page.click("#delete-confirm")
    page.locator("#delete-dialog .error", has_text="the latest one").wait_for()
    assert page.locator("#delete-confirm").inner_text() == "Delete it and its checkpoint"
    shoot(page, "runs-08-delete-latest", full_page=False)
    page.click("#delete-keep")
    assert stack.get(f"/jobs/{state['gamma']}").status_code == 200
