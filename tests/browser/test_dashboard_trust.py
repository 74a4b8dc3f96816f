"""When not to trust a model, in the browser: a tiny finished job (with a validation split) shows its
"Calibration" card, the reliability diagram drawn from the metrics' bins with the ECE before and after
the temperature, and its "Likely label errors" gallery, whose tiles are the API's issues in rank order
with the overlays of both classes; the predict page offers "calibrated" for its checkpoint and says
the probabilities were calibrated."""

from __future__ import annotations

import io

import pytest
from dashboard_support import js_fixed
from e2e_support import Stack
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {  # one epoch on 300 images: a model that still contradicts plenty of labels
    "dataset": {"name": "fashion_mnist", "train_subset": 300, "test_subset": 200},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 1,
    "batch_size": 32,
    "gradcam_misclassified": 0,
    "validation_split": 0.2,
    "compile": "off",
}


def test_a_finished_job_shows_its_calibration_and_likely_label_errors(
    page, stack: Stack, shoot, tmp_path, state
) -> None:
    job_id = stack.submit("train", TINY)
    state["job"] = job_id
    assert stack.wait(job_id)["status"] == "succeeded"
    calibration = stack.get(f"/jobs/{job_id}/metrics").json()["calibration"]
    issues = stack.get(f"/jobs/{job_id}/label-issues?limit=24").json()
    assert calibration["temperature"]["applied"] and issues["set"] == "validation" and issues["total"] > 0

    page.goto(f"{stack.url}/#/jobs/{job_id}")
    card = page.locator("#calibration")
    card.wait_for()
    assert js_fixed(calibration["ece"], 3) in card.locator("#ece").inner_text()
    after = card.locator("#ece-after").inner_text()
    assert (
        js_fixed(calibration["calibrated"]["ece"], 3) in after
        and f"T = {js_fixed(calibration['temperature']['value'], 2)}" in after
    )
    used = sum(1 for b in calibration["bins"] if b["count"])
    assert card.locator("canvas#reliability").get_attribute("data-bins") == str(used)
    drawn = card.locator("canvas#reliability").evaluate(  # the canvas has ink on it
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert drawn

    tiles = page.locator("#issue-tiles .issue-tile")
    tiles.first.wait_for()
    shown = tiles.evaluate_all("ts => ts.map(t => Number(t.dataset.index))")
    assert shown == [i["index"] for i in issues["issues"]]
    first = issues["issues"][0]
    text = tiles.first.inner_text()
    assert first["given_class"] in text and first["predicted_class"] in text and js_fixed(first["score"], 3) in text
    page.wait_for_function(
        "() => [...document.querySelectorAll('#issue-tiles .issue-tile')].slice(0, 1)"
        ".every(t => [...t.querySelectorAll('img')].length === 2"
        " && [...t.querySelectorAll('img')].every(i => i.naturalWidth === 96))"
    )
    assert f"of {issues['total']}" in page.locator("#issues-range").inner_text()
    card.scroll_into_view_if_needed()
    shoot(page, "trust-01-calibration-and-label-errors")

    page.goto(f"{stack.url}/#/predict?checkpoint={stack.get(f'/jobs/{job_id}').json()['checkpoint_id']}")
    label = page.locator("#calibrated-label")
    label.wait_for()
    assert label.is_visible() and f"T = {js_fixed(calibration['temperature']['value'], 2)}" in label.inner_text()
    image = io.BytesIO()
    Image.new("L", (28, 28), 128).save(image, format="PNG")
    path = tmp_path / "grey.png"
    path.write_bytes(image.getvalue())
    page.check("#calibrated")
    page.set_input_files("#files", str(path))
    page.locator("#calibrated-note").wait_for()
    assert f"T = {js_fixed(calibration['temperature']['value'], 2)}" in page.locator("#calibrated-note").inner_text()
    shoot(page, "trust-02-predict-calibrated")
    assert page.errors == [], "the page threw"


def test_an_audit_started_from_a_job_lists_the_training_sets_label_errors(page, stack: Stack, shoot, state) -> None:
    page.goto(f"{stack.url}/#/jobs/{state['job']}")
    page.locator("#audit-start").wait_for()
    page.fill("#audit-folds-input", "2")
    page.fill("#audit-epochs", "1")
    page.click("#audit-start")
    page.wait_for_function(f"() => location.hash.startsWith('#/jobs/') && location.hash !== '#/jobs/{state['job']}'")
    audit_id = page.evaluate("() => location.hash.split('/')[2]")
    job = stack.get(f"/jobs/{audit_id}").json()
    assert job["kind"] == "audit" and job["params"]["folds"] == 2 and job["params"]["epochs"] == 1
    assert job["params"]["validation_split"] is None  # the job's own split gives way to the folds
    assert stack.wait(audit_id)["status"] == "succeeded"
    metrics = stack.get(f"/jobs/{audit_id}/metrics").json()
    issues = stack.get(f"/jobs/{audit_id}/label-issues?limit=24").json()
    assert "set" in issues, issues
    assert issues["set"] == "train" and issues["scored"] == metrics["images"] == 300  # no split held out now
    page.locator("#audit-folds tbody tr").nth(1).wait_for()
    assert page.locator("#audit-summary").inner_text().startswith(f"{metrics['label_issues']} likely label errors")
    tiles = page.locator("#issue-tiles .issue-tile")
    if issues["total"]:
        tiles.first.wait_for()
        assert tiles.evaluate_all("ts => ts.map(t => Number(t.dataset.index))") == [
            i["index"] for i in issues["issues"]
        ]
    assert "never saw it" in page.locator("#issues-about").inner_text()
    page.locator("#audit-card").scroll_into_view_if_needed()
    shoot(page, "trust-03-label-audit")
    page.goto(f"{stack.url}/#/jobs?kind=audit")
    page.locator("table tbody tr").first.wait_for()
    assert "label audit" in page.locator("table tbody tr").first.inner_text()
    assert page.errors == [], "the page threw"
