"""The whole product from the browser: a job form with its validation errors, an LR finder, "train
with this LR", curves that grow while the job runs, the GradCAM gallery, the checkpoint's "predict
with this" on an uploaded file, two jobs compared, a folder uploaded as a dataset and trained on, and
the key prompt of an API with API_KEY set.
The tests run in file order and hand the jobs they made to the next through `state`."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import numpy as np
import pytest
from dashboard_support import LAPTOP, PHONE, field, goto, job_id_of
from e2e_support import Stack
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LR_FINDER = {
    "dataset": {"name": "fashion_mnist", "train_subset": 500},
    "model": {"name": "resnet18", "width": 4},
    "batch_size": 32,
    "num_iter": 30,
    "start_lr": 1e-4,
    "end_lr": 10,
    "augmentation": "none",  # so that its loss falls clearly in 30 steps (7%), else nothing is suggested
    "smooth_f": 0.1,
}
# Epochs of a few seconds here, so that the 1.5 s poll sees the curves grow.
EPOCHS = 10  # for the page, polling every 1.5 s, to see the curves grow: ~0.5 s an epoch on a fast machine
TRAIN_EDITS = {
    "dataset.train_subset": "1200",
    "dataset.test_subset": "300",
    "epochs": str(EPOCHS),
    "batch_size": "64",
    "gradcam_misclassified": "8",
}
OTHER = {
    "dataset": {"name": "fashion_mnist", "train_subset": 600, "test_subset": 200},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 2,
    "batch_size": 64,
    "gradcam_misclassified": 4,
    "optimizer": {"lr": 0.02},
}
LONG = {
    "dataset": {"name": "fashion_mnist", "train_subset": 200, "test_subset": 100},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 200,
    "batch_size": 32,
    "gradcam_misclassified": 0,
    "compile": "off",
}  # 1,400 steps would compile ("auto"): minutes on a busy CPU before the first epoch


def fashion_png(columns: list[int]) -> bytes:
    """A Fashion-MNIST-like upload: light columns on black, 28x28 greyscale (two legs: a trouser)."""
    image = Image.new("L", (28, 28), 0)
    for y in range(3, 26):
        for x in columns:
            image.putpixel((x, y), 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_form_puts_422_messages_beside_their_fields(page, stack: Stack, shoot) -> None:
    goto(page, stack, "/jobs")
    page.wait_for_selector("table.jobs")
    assert not page.locator("#key-dialog").evaluate("d => d.open"), "no API_KEY: the page opens straight away"
    goto(page, stack, "/new")
    field(page, "batch_size").locator("input").fill("0")
    field(page, "optimizer.lr").locator("input").fill("fast")
    field(page, "scheduler.name").locator("select").select_option("one_cycle")  # the fields follow the union
    field(page, "scheduler.pct_start").locator("input").fill("2")
    assert json.loads(page.locator("#spec-editor").input_value())["batch_size"] == 0  # the JSON follows the form
    page.click("#submit")
    batch_error = field(page, "batch_size").locator(".field-error")
    batch_error.wait_for()
    assert "greater than or equal to 1" in batch_error.inner_text()
    assert "fast" in field(page, "optimizer.lr").locator(".field-error").inner_text()
    assert (
        "less than 1" in field(page, "scheduler.pct_start").locator(".field-error").inner_text()
    )  # loc has "one_cycle"
    assert "#/new" in page.url, "nothing was submitted"
    shoot(page, "01-new-job-form-errors")


def test_lr_finder_from_the_form_shows_its_curve_and_suggestions(page, stack: Stack, shoot, state) -> None:
    goto(page, stack, "/new?kind=lr_finder")
    page.locator("#spec-editor").fill(json.dumps(LR_FINDER))
    assert field(page, "num_iter").locator("input").input_value() == "30"  # the form follows the JSON
    page.click("#submit")
    state["lr_finder"] = job_id_of(page)
    page.wait_for_selector("#train-with-lr", timeout=180_000)
    assert page.locator("#chart-lr-finder canvas").count() == 1
    assert page.locator(".suggestions tbody tr").count() == 3  # steepest, valley, minimum_div10
    assert "succeeded" in page.locator("#progress .badge").inner_text()
    shoot(page, "02-lr-finder")


def test_train_with_this_lr_and_watch_the_curves_grow(page, stack: Stack, shoot, state) -> None:
    assert "lr_finder" in state, "needs the LR-finder job of the previous test"
    page.click("#train-with-lr")
    page.wait_for_selector('[data-field="optimizer.lr"] input')
    assert field(page, "optimizer.lr").locator("input").input_value() == "auto"
    assert field(page, "optimizer.lr_finder_job").locator("input").input_value() == state["lr_finder"]
    page.click("details.advanced > summary")  # gradcam_misclassified is an advanced field
    for path, value in TRAIN_EDITS.items():
        field(page, path).locator("input").fill(value)
    spec = json.loads(page.locator("#spec-editor").input_value())
    assert spec["epochs"] == EPOCHS and spec["dataset"]["train_subset"] == 1200 and spec["optimizer"]["lr"] == "auto"
    shoot(page, "03-train-form-from-lr-finder")
    page.click("#submit")
    state["train"] = job_id_of(page)
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

    seen, lr_titles, shot = [], set(), False
    deadline = time.monotonic() + 240
    while (status := page.locator("#progress .badge").inner_text()) not in ("succeeded", "failed", "cancelled"):
        epochs = int(page.locator(".view").get_attribute("data-epochs") or 0)
        seen.append(epochs)
        if status == "running":
            lr_titles.add(page.locator("#chart-lr .u-title").inner_text())
        progress = page.locator(".progress-text").inner_text()
        if status == "running" and epochs >= 1 and "100.0%" not in progress and not shot:  # no ETA at 100%
            assert "ETA" in progress
            shoot(page, "04-training-live")
            shot = True
        assert time.monotonic() < deadline, f"still {status} after 240 s"
        page.wait_for_timeout(200)
    assert status == "succeeded", page.locator("#progress").inner_text()
    assert len({n for n in seen if n < EPOCHS}) >= 2, f"the curves never grew while the job ran: {sorted(set(seen))}"
    assert page.evaluate("window.__sameDocument") is True
    assert "Learning rate per step" in lr_titles, f"no LR per step while the job ran: {lr_titles}"
    page.wait_for_selector("#per-class .bar-row")
    assert page.locator("#per-class .bar-row").count() == 10
    assert page.locator(".view").get_attribute("data-epochs") == str(EPOCHS)
    result = page.locator("#result-accuracy").inner_text()  # what each figure is, not just "best"
    assert f"Last epoch ({EPOCHS}) test accuracy" in result and "chosen on the test set" in result, result


def test_the_gradcam_gallery_and_a_larger_view(page, stack: Stack, shoot, state) -> None:
    assert "train" in state, "needs the training job of the previous test"
    gallery = page.locator("#galleries .gallery-image")
    page.wait_for_function("() => document.querySelector('#galleries .gallery-image')?.naturalWidth > 0")
    assert gallery.get_attribute("data-name") == "gradcam_misclassified.png"
    page.click("#galleries .tabs button[data-name='gradcam_misclassified_true.png']")
    page.wait_for_function(
        "() => document.querySelector('#galleries .gallery-image').dataset.name === 'gradcam_misclassified_true.png'"
    )
    page.click("#galleries .tabs button[data-name='gradcam_misclassified.png']")
    page.wait_for_function("() => document.querySelector('#galleries .gallery-image').naturalWidth > 0")
    assert page.locator("#chart-lr canvas").count() == 1 and page.locator("#checkpoint a").count() == 1
    shoot(page, "05-training-done")
    gallery.click()
    assert page.locator("#lightbox").evaluate("d => d.open")
    shoot(page, "06-gallery-larger-view", full_page=False)
    page.keyboard.press("Escape")


def test_predict_with_this_checkpoint_on_an_uploaded_file(page, stack: Stack, shoot, state, tmp_path) -> None:
    assert "train" in state, "needs the training job"
    page.click("#checkpoint a")
    page.wait_for_selector("#files", state="attached")
    checkpoint = stack.get(f"/jobs/{state['train']}").json()["checkpoint_id"]
    assert page.locator("#checkpoint").input_value() == checkpoint
    trouser, block = tmp_path / "trouser.png", tmp_path / "block.png"
    trouser.write_bytes(fashion_png([*range(8, 13), *range(15, 20)]))
    block.write_bytes(fashion_png(list(range(6, 22))))
    page.set_input_files("#files", [str(trouser), str(block)])
    page.wait_for_selector(".prediction")
    assert page.locator(".prediction").count() == 2  # one card per image, one request
    assert page.locator(".prediction .bar-row").count() == 6  # top-3 each
    assert page.locator(".prediction img.overlay").count() == 2
    assert "gradcam for" in page.locator(".prediction figcaption").nth(1).inner_text()
    page.select_option("#method", "gradcam++")
    page.select_option("#target", "Trouser")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.prediction figcaption')].filter("
        "c => c.textContent.includes('gradcam++ for \"Trouser\"')).length === 2"
    )
    shoot(page, "07-predict")


def test_compare_two_training_jobs(page, stack: Stack, shoot, state) -> None:
    assert "train" in state, "needs the training job"
    other = stack.submit("train", OTHER)
    assert stack.wait(other)["status"] == "succeeded"
    goto(page, stack, "/jobs?kind=train")
    for job_id in (state["train"], other):
        page.locator(f'tr[data-job="{job_id}"] input[type=checkbox]').check()
    shoot(page, "08-jobs")
    page.click("text=Compare selected (2)")
    page.wait_for_selector("#compare-test_acc canvas")
    different = page.locator(".spec-compare tr.diff th").all_inner_texts()
    assert {"optimizer.lr", "epochs", "dataset.train_subset"} <= set(different), different
    assert "optimizer.momentum" not in different
    shoot(page, "09-compare")


def pets_folder(root) -> Any:
    """A folder as a user has it: pets/train/<class>/*.png and pets/test/<class>/*.png, two classes of
    differently coloured noisy squares and a stray text file."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for name, channel in (("cat", 0), ("dog", 2)):
            folder = root / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
                pixels[..., channel] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "pets" / "notes.txt").write_text("not an image")
    return root / "pets"


def test_upload_a_folder_and_train_on_it(page, stack: Stack, shoot, tmp_path) -> None:
    goto(page, stack, "/datasets")
    page.set_input_files("#folder-files", str(pets_folder(tmp_path)))  # archived as a tar by the page
    page.wait_for_selector("#class-counts .bar-row", timeout=60_000)
    dataset_id = page.url.rsplit("/", 1)[-1]
    dataset = stack.get(f"/datasets/{dataset_id}").json()
    assert dataset["counts"] == {"train": {"cat": 24, "dog": 24}, "test": {"cat": 8, "dog": 8}}, dataset
    assert [s["member"] for s in dataset["skipped"]] == ["pets/notes.txt"]
    assert page.locator("#class-counts .bar-row").count() == 2 and page.locator("#skipped li").count() == 1
    page.wait_for_function("() => document.querySelector('#samples')?.naturalWidth > 0")
    shoot(page, "09b-dataset")
    page.click("#train-on-this")
    page.wait_for_selector("#spec-editor")
    spec = json.loads(page.locator("#spec-editor").input_value())
    assert spec["dataset"] == {"name": "uploaded", "id": dataset_id, "image_size": 32}, spec["dataset"]
    # the preset (batch 256 for 60,000 images) fitted to 48: the smallest batch, the lr scaled with it, 400 steps
    preset = stack.get("/models").json()["presets"][0]["spec"]
    assert spec["batch_size"] == 32 and spec["epochs"] == 60, spec
    assert spec["optimizer"]["lr"] == pytest.approx(preset["optimizer"]["lr"] * 32 / preset["batch_size"], rel=1e-3)
    assert "fitted to 48 training images: batch 32, 60 epochs" in page.locator("#run-summary").inner_text()
    field(page, "epochs").locator("input").fill("2")
    page.click("#submit")
    job = stack.wait(job_id_of(page))
    assert job["status"] == "succeeded", job.get("error")
    answer = stack.post(
        "/predict",
        params={"checkpoint": job["checkpoint_id"]},
        files={"file": ("cat.png", (tmp_path / "pets" / "test" / "cat" / "0.png").read_bytes())},
    ).json()
    assert answer["predictions"][0]["label"] in ("cat", "dog")  # the folder names are the classes
    # the upload by its name where the jobs are listed and on the job's page, by its classes where its
    # checkpoint is chosen
    goto(page, stack, "/jobs")
    row = page.locator(f'tr[data-job="{job["id"]}"]')
    row.wait_for()
    assert "pets (uploaded)" in row.inner_text()
    goto(page, stack, f"/jobs/{job['id']}")
    page.wait_for_selector(".page-head p:has-text('pets (uploaded)')")
    goto(page, stack, "/predict")
    option = page.locator(f'#checkpoint option[value="{job["checkpoint_id"]}"]')
    option.wait_for(state="attached")
    assert "uploaded: cat, dog" in (option.text_content() or "")
    # the same folder again: its page names the dataset that holds these images already
    goto(page, stack, "/datasets")
    page.set_input_files("#folder-files", str(tmp_path / "pets"))
    page.wait_for_url(re.compile(rf"#/datasets/(?!{dataset_id})\w+$"), timeout=60_000)
    page.wait_for_selector("#twins", timeout=60_000)
    assert page.locator(f'#twins a[href="#/datasets/{dataset_id}"]').count() == 1


def test_cancel_a_running_job_from_its_page(page, stack: Stack, shoot) -> None:
    job_id = stack.submit("train", LONG)
    goto(page, stack, f"/jobs/{job_id}")
    page.wait_for_function(
        "() => document.querySelector('#progress .badge')?.textContent === 'running'"
        " && Number(document.querySelector('.view').dataset.epochs) >= 1",
        timeout=120_000,
    )
    page.click("#progress button.danger")
    page.wait_for_function(
        "() => document.querySelector('#progress .badge')?.textContent === 'cancelled'", timeout=120_000
    )
    assert stack.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    page.wait_for_selector("#checkpoint a")  # a cancelled run keeps its epochs and best checkpoint
    assert "stopped: cancelled" in page.locator(".view").inner_text()
    shoot(page, "10-cancelled")


def test_readable_on_a_phone(browser, stack: Stack, shoot, state) -> None:
    assert "train" in state, "needs the training job"
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    phone = context.new_page()
    try:
        pages = (
            (f"/jobs/{state['train']}", "#per-class .bar-row", "11-phone-training"),
            ("/jobs", "table.jobs tbody tr[data-job]", "12-phone-jobs"),
            ("/new", "#spec-editor", "13-phone-new-job"),
        )
        for route, ready, name in pages:
            phone.goto(f"{stack.url}/#{route}")
            phone.wait_for_selector(ready)
            overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{route} is {overflow}px wider than the phone"
            shoot(phone, name)
    finally:
        context.close()


def test_a_key_prompt_when_api_key_is_set(browser, keyed_api: Stack, api_key: str, shoot) -> None:
    context = browser.new_context(viewport=LAPTOP)
    keyed = context.new_page()
    try:
        keyed.goto(f"{keyed_api.url}/#/jobs")
        dialog = keyed.locator("#key-dialog")
        dialog.wait_for(state="visible")
        assert "missing API key" in keyed.locator("#key-reason").inner_text()
        shoot(keyed, "14-key-prompt", full_page=False)
        keyed.fill("#key-input", "not-the-key")
        keyed.click("#key-form button[type=submit]")
        keyed.wait_for_function("() => document.querySelector('#key-reason').textContent.includes('wrong API key')")
        keyed.fill("#key-input", api_key)
        keyed.click("#key-form button[type=submit]")
        keyed.wait_for_selector("table.jobs tbody tr[data-job]")
        assert api_key not in keyed.url
        assert keyed.evaluate("localStorage.getItem('lrcam.apiKey')") == api_key
        keyed.reload()  # kept: no second prompt
        keyed.wait_for_selector("table.jobs tbody tr[data-job]")
        assert not dialog.evaluate("d => d.open")
    finally:
        context.close()


def test_the_api_docs_work_under_the_pages_policy(page, stack: Stack) -> None:
    """/docs: Swagger UI from this server (swagger-ui-bundle), started by a script file, no CDN."""
    page.goto(f"{stack.url}/docs")
    page.wait_for_selector(".opblock-tag")  # the operations, read from /openapi.json
    assert page.locator(".opblock").count() > 10
    assert "script-src 'self'" in page.evaluate(
        "async () => (await fetch('/docs')).headers.get('content-security-policy')"
    )
