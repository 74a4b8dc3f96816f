"""The `lrcam` CLI against the real API: `service.main`'s app served by uvicorn in a thread, a SQLite
store in a temporary folder, and the real Redis as broker, on a queue of its own that no worker
reads (deleted afterwards). What a worker would write, the tests write through the store."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from PIL import Image

from core import store
from core.config import Settings, get_settings
from core.db import session_for
from service import client
from service.client import main
from service.main import create_app

REDIS_URL = "redis://127.0.0.1:6379/0"
API_KEY = "client-test-key-0123456789"
TRAIN_SPEC = {
    "dataset": {"name": "fashion_mnist", "train_subset": 100},
    "model": {"name": "custom_resnet", "width": 4},
    "epochs": 2,
    "batch_size": 32,
}
LR_FINDER_SPEC = {"dataset": {"name": "fashion_mnist", "train_subset": 100}, "num_iter": 10}


@dataclass
class Server:
    url: str
    settings: Settings
    tmp: Path

    def session(self):
        return session_for(self.settings.DATABASE_URL)

    def detail(self, method: str, path: str) -> str:
        """The server's own `detail` for a request, to compare with what the CLI printed."""
        headers = {"Authorization": f"Bearer {API_KEY}"}
        return httpx.request(method, self.url + path, headers=headers).json()["detail"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("client")
    queue = f"lrcam-client-test-{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
        "REDIS_URL": REDIS_URL,
        "JOB_QUEUE": queue,
        "DATA_DIR": str(tmp / "data"),
        "ARTIFACTS_DIR": str(tmp / "artifacts"),
        "API_KEY": API_KEY,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        uvicorn_server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
        thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not uvicorn_server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        try:
            yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", get_settings(), tmp)
        finally:
            uvicorn_server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            get_settings.cache_clear()
            broker = redis.Redis.from_url(REDIS_URL)
            broker.delete(queue, *broker.keys(f"*{queue}*"))


def lrcam(server: Server, capsys: pytest.CaptureFixture[str], *args: str, key: str = API_KEY) -> tuple[int, str, str]:
    code = main(["--url", server.url, "--api-key", key, *args])
    out, err = capsys.readouterr()
    return code, out, err


def submit(server: Server, capsys: pytest.CaptureFixture[str], command: str, spec: dict) -> str:
    path = server.tmp / f"spec-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    code, out, err = lrcam(server, capsys, command, str(path))
    assert code == 0, err
    return out.strip()


def test_train_posts_the_spec_and_prints_the_job_id(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(server, capsys, "train", TRAIN_SPEC)
    with server.session() as session:
        job = store.get_job(session, job_id)
    assert job is not None and job.kind == "train" and job.status == "queued"
    assert job.params["epochs"] == 2 and job.params["model"] == {"name": "custom_resnet", "width": 4}
    assert redis.Redis.from_url(REDIS_URL).llen(server.settings.JOB_QUEUE) >= 1  # sent to the broker


def test_a_rejected_spec_prints_the_fields_at_fault(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    path = server.tmp / "bad.json"
    path.write_text(json.dumps({"dataset": {"name": "imagenet"}}))
    code, out, err = lrcam(server, capsys, "lr-find", str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: 422: ") and "body.dataset.name: " in err and "cifar10" in err


def test_a_spec_that_is_not_json_is_refused_before_sending(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    path = server.tmp / "broken.json"
    path.write_text("{not json")
    code, _, err = lrcam(server, capsys, "train", str(path))
    assert code == 2 and f"cannot read the spec {path}" in err


def test_jobs_lists_newest_first_and_filters(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    train_id = submit(server, capsys, "train", TRAIN_SPEC)
    lr_id = submit(server, capsys, "lr-find", LR_FINDER_SPEC)

    code, out, _ = lrcam(server, capsys, "jobs", "--kind", "lr_finder")
    rows = out.splitlines()
    assert code == 0 and rows[0].split() == ["ID", "KIND", "STATUS", "CREATED", "PROGRESS", "ERROR"]
    assert lr_id in out and train_id not in out and all("lr_finder" in row for row in rows[1:-1])

    code, out, _ = lrcam(server, capsys, "jobs", "--limit", "1")
    rows = out.splitlines()
    assert code == 0 and len(rows) == 3 and rows[1].split()[:3] == [lr_id, "lr_finder", "queued"]
    assert rows[2].startswith("1 of ") and rows[2].endswith(" jobs") and int(rows[2].split()[2]) >= 2


def test_show_prints_the_job_as_json(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(server, capsys, "train", TRAIN_SPEC)
    code, out, _ = lrcam(server, capsys, "show", job_id)
    job = json.loads(out)
    assert code == 0 and job["id"] == job_id and job["status"] == "queued" and job["params"]["batch_size"] == 32


def test_cancel_a_queued_job_and_then_a_409(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(server, capsys, "train", TRAIN_SPEC)
    code, out, _ = lrcam(server, capsys, "cancel", job_id)
    assert code == 0 and out.strip() == f"job {job_id} cancelled"
    code, out, err = lrcam(server, capsys, "cancel", job_id)
    assert code == 2 and out == ""
    assert err.strip() == f"error: 409: {server.detail('POST', f'/jobs/{job_id}/cancel')}"
    code, out, _ = lrcam(server, capsys, "watch", job_id)
    assert code == 1 and out.strip() == f"job {job_id} cancelled"


def test_an_unknown_job_prints_the_servers_detail(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = lrcam(server, capsys, "show", "no-such-job")
    assert code == 2 and out == ""
    assert err.strip() == f"error: 404: {server.detail('GET', '/jobs/no-such-job')}"
    assert "no-such-job" in err


def test_a_wrong_api_key_is_a_401(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = lrcam(server, capsys, "jobs", key="wrong")
    assert code == 2 and err.startswith("error: 401: ") and "API key" in err


def test_an_unreachable_api_says_how_to_start_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        code = main(["--url", url, "jobs"])
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert f"not reachable at {url}" in err and "scripts/up" in err


def play_worker(server: Server, job_id: str, epochs: list[dict], result: dict, status: str = "succeeded") -> None:
    """What a worker writes while it runs the job, with pauses so that a watcher sees it progress."""
    with server.session() as session:
        assert store.claim_job(session, job_id, worker="test", lease_seconds=60) is not None
        for record in epochs:
            progress = {"epoch": record["epoch"], "epochs": len(epochs), "step": 5, "steps": 10, "fraction": 0.5}
            store.heartbeat(session, job_id, progress)
            time.sleep(0.15)
            store.add_epoch(session, job_id, record)
        time.sleep(0.15)
        error = "CUDA out of memory" if status == "failed" else None
        store.finish_job(session, job_id, status=status, result=result, error=error)


def epoch_record(epoch: int, test_acc: float) -> dict:
    return {
        "epoch": epoch,
        "lr": 0.05,
        "train_loss": 1.5 / epoch,
        "train_acc": 0.4,
        "test_loss": 1.4 / epoch,
        "test_acc": test_acc,
        "seconds": 1.25,
        "images_per_second": 4065.0,
    }


def test_train_watch_prints_each_epoch_once_and_the_end(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "POLL_SECONDS", 0.05)
    job_id = submit(server, capsys, "train", TRAIN_SPEC)
    epochs = [epoch_record(1, 0.5), epoch_record(2, 0.625)]
    worker = threading.Thread(target=play_worker, args=(server, job_id, epochs, {"stop_reason": "completed"}))
    worker.start()
    code, out, _ = lrcam(server, capsys, "watch", job_id)
    worker.join()
    lines = out.splitlines()
    assert code == 0
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert "test loss 0.7000 acc 62.50%" in epoch_lines[1] and "lr 0.05" in epoch_lines[1]
    assert "4,065 img/s" in epoch_lines[1] and epoch_lines[1].endswith("1.2 s")
    assert lines[-3:] == [
        f"job {job_id} succeeded",
        "last epoch (2) test accuracy 62.50%",
        "best test accuracy 62.50% at epoch 2 (chosen on the test set)",
    ]


def test_lr_find_watch_prints_the_suggestions(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "POLL_SECONDS", 0.05)
    path = server.tmp / "lr.json"
    path.write_text(json.dumps(LR_FINDER_SPEC))
    result = {
        "lrs": [1e-3, 1e-2],
        "losses": [2.3, 2.1],
        "smoothed_losses": [2.3, 2.2],
        "suggested_lr": 0.0533,
        "suggestions": {"steepest": 0.0533, "valley": 0.021},
        "diverged_at_lr": None,
        "stop_reason": "completed",
    }
    with server.session() as session:
        before = {job.id for job in store.list_jobs(session, limit=500)[0]}

    def worker() -> None:  # the job the CLI is about to submit
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with server.session() as session:
                new = [job.id for job in store.list_jobs(session, limit=500)[0] if job.id not in before]
            if new:
                play_worker(server, new[0], [], result)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    code, out, _ = lrcam(server, capsys, "lr-find", str(path), "--watch")
    thread.join()
    lines = out.splitlines()
    assert code == 0 and len(lines[0]) > 0 and lines[1] == f"job {lines[0]} succeeded"
    assert lines[2:] == ["suggested lr: 0.0533", "  steepest: 0.0533", "  valley: 0.021"]


def test_watch_a_failed_job_exits_1_with_its_error(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(server, capsys, "lr-find", LR_FINDER_SPEC)
    play_worker(server, job_id, [], {}, status="failed")
    code, out, _ = lrcam(server, capsys, "watch", job_id)
    assert code == 1 and out.splitlines()[:2] == [f"job {job_id} failed", "error: CUDA out of memory"]


def test_artifacts_downloads_every_file(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit(server, capsys, "train", TRAIN_SPEC)
    folder = server.settings.ARTIFACTS_DIR / "jobs" / job_id
    folder.mkdir(parents=True)
    files = {"accuracy.png": b"\x89PNG accuracy", "metrics.json": b'{"epochs": []}'}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    with server.session() as session:
        store.add_artifacts(
            session,
            job_id,
            [
                store.ArtifactFile("accuracy.png", "image/png", f"jobs/{job_id}/accuracy.png"),
                store.ArtifactFile("metrics.json", "application/json", f"jobs/{job_id}/metrics.json"),
            ],
        )
    out_dir = server.tmp / "downloads"
    code, out, _ = lrcam(server, capsys, "artifacts", job_id, "--out", str(out_dir))
    assert code == 0 and sorted(out.split()) == sorted(str(out_dir / name) for name in files)
    assert {path.name: path.read_bytes() for path in out_dir.iterdir()} == files


def save_tiny_checkpoint(server: Server, classes: list[str]) -> str:
    """A real checkpoint (random weights) of a width-4 ResNet9, registered as a worker would."""
    from ml.checkpoints import save_checkpoint
    from ml.models import build_model
    from ml.specs import ModelSpec

    spec = {"name": "custom_resnet", "width": 4}
    model = build_model(ModelSpec(**spec), in_channels=3, num_classes=len(classes))
    manifest = {
        "model": spec,
        "in_channels": 3,
        "num_classes": len(classes),
        "image_size": 32,
        "dataset": "cifar10",
        "classes": classes,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "epoch": 3,
        "test_acc": 0.5,
    }
    save_checkpoint(server.settings.ARTIFACTS_DIR / "checkpoints" / "tiny", model=model, manifest=manifest)
    with server.session() as session:
        job = store.create_job(session, kind="train", params=TRAIN_SPEC)
        row = store.add_checkpoint(
            session,
            job_id=job.id,
            model=spec,
            dataset="cifar10",
            classes=classes,
            test_acc=0.5,
            epoch=3,
            path="checkpoints/tiny",
        )
    return row.id


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_checkpoints_and_predict_with_gradcam(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    classes = ["cat", "dog", "frog"]
    checkpoint_id = save_tiny_checkpoint(server, classes)
    code, out, _ = lrcam(server, capsys, "checkpoints")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "JOB", "MODEL", "DATASET", "TEST_ACC", "EPOCH", "CREATED"]
    row = next(line for line in out.splitlines() if line.startswith(checkpoint_id)).split()
    assert row[2:6] == ["custom_resnet/4", "cifar10", "50.00%", "3"]

    images = [server.tmp / "red.png", server.tmp / "blue.png"]
    images[0].write_bytes(png((200, 30, 30), (40, 40)))
    images[1].write_bytes(png((30, 30, 200), (17, 23)))
    out_dir = server.tmp / "overlays"
    code, out, err = lrcam(
        server,
        capsys,
        "predict",
        *map(str, images),
        "--checkpoint",
        checkpoint_id,
        "--gradcam",
        "--topk",
        "2",
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"checkpoint {checkpoint_id}"
    predictions = [line for line in lines if not line.startswith(("checkpoint", "  "))]
    assert [line.split(":")[0] for line in predictions] == ["red.png", "blue.png"]
    assert all(line.split()[1] in classes and line.count("%") == 3 for line in predictions)  # label + top 2
    overlays = sorted(out_dir.iterdir())
    assert [path.name for path in overlays] == ["00-red.gradcam.png", "01-blue.gradcam.png"]
    for path in overlays:
        assert str(path) in out
        with Image.open(path) as overlay:
            assert overlay.format == "PNG" and overlay.size[0] > 0


def test_predict_errors(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    image = server.tmp / "one.png"
    image.write_bytes(png((0, 0, 0), (8, 8)))
    code, _, err = lrcam(server, capsys, "predict", str(image), "--checkpoint", "no-such-checkpoint")
    assert code == 2 and err.startswith("error: 404: ") and "no-such-checkpoint" in err
    code, _, err = lrcam(server, capsys, "predict", str(server.tmp / "missing.png"))
    assert code == 2 and "cannot read the image" in err


def test_the_client_is_a_pure_http_client() -> None:
    """`python -m service.client` loads neither torch nor the service's own modules."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['lrcam', '--help']\n"
        "try:\n    runpy.run_module('service.client', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ml', 'worker', 'fastapi', 'sqlalchemy')"
        " or m.startswith('service.') and m != 'service.client'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "lrcam" in result.stdout and "exit codes" in result.stdout


def test_the_jobs_list_shows_a_dataset_download_in_progress() -> None:
    downloading = {"downloading": "cifar10", "downloaded_bytes": 50, "total_bytes": 200}
    assert client.progress_text({"progress": downloading}) == "downloading cifar10 25%"
    assert client.progress_text({"progress": {**downloading, "total_bytes": None}}) == "downloading cifar10"
    assert client.progress_text({"progress": {"epoch": 2, "epochs": 4, "fraction": 0.5}}) == "epoch 2/4 50%"


def test_datasets_upload_a_folder_list_and_remove(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    folder = server.tmp / "leaves"
    for name, colour in (("healthy", (30, 160, 30)), ("rust", (160, 90, 20))):
        (folder / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (16, 12), colour).save(folder / name / f"{i}.png")
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden: not archived
    code, out, err = lrcam(server, capsys, "datasets", "upload", str(folder), "--test-fraction", "0.4", "--wait")
    assert code == 0, err
    dataset_id, ready = out.splitlines()[:2]
    assert ready == f"dataset {dataset_id} ready: 2 classes, 6 train and 4 test images"
    code, out, _ = lrcam(server, capsys, "datasets")
    assert code == 0 and dataset_id in out and "leaves" in out and "ready" in out
    code, out, _ = lrcam(server, capsys, "datasets", "rm", dataset_id)
    assert code == 0 and out.strip() == f"dataset {dataset_id} deleted"
    code, _, err = lrcam(server, capsys, "datasets", "rm", dataset_id)
    assert code == 2 and "404" in err and "no uploaded dataset" in err
    code, _, err = lrcam(server, capsys, "datasets", "upload", str(server.tmp / "nowhere"))
    assert code == 2 and "does not exist" in err


def test_output_into_a_pipe_whose_reader_left_ends_quietly() -> None:
    """`lrcam jobs | head`: once head has its lines the rest goes nowhere, without a traceback."""
    code = (
        "import sys\n"
        "from service import client\n"
        "client.cmd_jobs = lambda api, args: [print('a job row ' * 8) for _ in range(200_000)] and 0\n"
        "sys.exit(client.main(['--url', 'http://127.0.0.1:9', 'jobs']))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100).startswith(b"a job row")
    process.stdout.close()  # the reader goes
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
