"""/predict over real HTTP (uvicorn on a free loopback port) against in-process baselines, one run.

    python bench/predict.py --quick          # < 1 min on 2 cores
    python bench/predict.py                  # more requests and rounds
    python bench/predict.py --device cuda    # the API predicts on the GPU (PREDICT_DEVICE=cuda)
    python bench/predict.py --clients 50     # the batching row with 50 clients
    python bench/predict.py --batching-only  # the model_batch and batching rows alone (~1 min)

The API gets a checkpoint this script writes with ml.checkpoints.save_checkpoint (ResNet18 width 64,
random weights, 3 channels, 32x32, 10 classes), registered in a fresh SQLite store. Figures:
- gradcam_one: p50 latency of /predict?gradcam=true with one 32x32 PNG, vs the raw forward of the
  same model (inference_mode, the image already a tensor) and vs pytorch-grad-cam's plain use
  (GradCAM(model, target_layers) called on the tensor: a full backward).
- batch: images/s of /predict (no GradCAM) with 64 PNGs in one request, vs the raw inference_mode
  forward of the same 64 images as a tensor.
- gradcam_batch: images/s of /predict?gradcam=true with 64 PNGs (the GPU figure: 3,000 img/s on an H100).
- model_batch<N>: what batching can gain at most, in process: the model's forward pass and GradCAM
  backward (ml.gradcam.explain) per image at batch N vs alone.
- batching_<N>: N clients (--clients, default 10) each posting one 32x32 PNG with ?gradcam=true back to
  back: answered requests per second of the API as configured (concurrent requests batched into one
  forward pass, service.batching) vs a second API with batching off (PREDICT_MAX_BATCH=1), the two
  hammered in turn; refusals (429) and p50/p99 latency of each, and per round the requests each
  forward pass served (the API's /metrics). The clients are keep-alive connections sending prepared
  bytes (bench/clients.py), so that the generator takes little of the CPU the two APIs are measured on.
Ours and the baselines take turns, one call each (these machines have slow spells); medians over all.
Each ends with `<name>: ours ..., baseline ..., ratio ...` (ratio < 1 is better for latencies,
> 1 for throughputs)."""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients import Tally, crowd, post_file  # noqa: E402  # beside this file

from core import store  # noqa: E402
from core.db import session_for  # noqa: E402
from ml.checkpoints import load_model, save_checkpoint  # noqa: E402
from ml.gradcam import explain  # noqa: E402
from ml.models import build_model, gradcam_layer  # noqa: E402
from ml.specs import ModelSpec, TrainSpec  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]  # CIFAR-10's
BATCH = 64  # images in one request
STARTUP_S = 60  # seconds allowed for uvicorn to answer /health


def write_checkpoint(root: Path, database_url: str) -> tuple[str, Path]:
    """A ResNet18 width 64 checkpoint under root/artifacts, registered as the worker registers one."""
    torch.manual_seed(0)
    spec = {"name": "resnet18", "width": 64}
    model = build_model(ModelSpec(**spec), in_channels=3, num_classes=len(CLASSES)).eval()
    manifest = {
        "model": spec,
        "in_channels": 3,
        "num_classes": len(CLASSES),
        "image_size": 32,
        "dataset": "cifar10",
        "classes": CLASSES,
        "mean": MEAN,
        "std": STD,
        "epoch": 1,
        "test_acc": 0.1,
        "spec": {},
    }
    params = TrainSpec.model_validate({"dataset": {"name": "cifar10"}}).model_dump(mode="json")
    with session_for(database_url) as session:
        job = store.create_job(session, kind="train", params=params)
        store.claim_job(session, job.id, worker="bench", lease_seconds=60)
        store.finish_job(session, job.id, status="succeeded", result={}, error=None)
        relative = f"{job.id}/checkpoints/best"
        folder = save_checkpoint(root / "artifacts" / relative, model=model, manifest=manifest)
        row = store.add_checkpoint(
            session, job_id=job.id, model=spec, dataset="cifar10", classes=CLASSES, test_acc=0.1, epoch=1, path=relative
        )
        return row.id, folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(root: Path, database_url: str, device: str, port: int, **settings: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ARTIFACTS_DIR": str(root / "artifacts"),
        "DATA_DIR": str(root / "data"),
        "PREDICT_DEVICE": device,
        "API_KEY": "",
        **settings,
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=root, env={**env, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"uvicorn did not answer /health on port {port} within {STARTUP_S} s")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def warmed_request(port: int, path: str, image: bytes) -> bytes:
    """A one-image POST to `path` as prepared bytes (bench/clients.py), after three sent for real: the
    checkpoint loaded and the first oneDNN primitives made before anything is timed."""
    for _ in range(3):
        httpx.post(
            f"http://127.0.0.1:{port}{path}", files={"file": ("x.png", image, "image/png")}, timeout=120
        ).raise_for_status()
    return post_file(path, port, "file", "x.png", image, "image/png")


def batches_served(port: int) -> tuple[float, float]:
    """(requests, forward passes) the API has served so far, from its /metrics histogram."""
    name = "lrcam_prediction_batch_requests"
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    series = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(f"{name}_"))
    return float(series.get(f"{name}_sum", 0)), float(series.get(f"{name}_count", 0))


def summary(tally: Tally, seconds: float) -> dict[str, float]:
    """Answered per second, refused (429), p50 and p99 of the answered (ms)."""
    if tally.errors:
        raise RuntimeError(f"{tally.errors} requests failed: {dict(tally.kinds)}")
    answered = sorted(tally.latencies)
    cut = statistics.quantiles(answered, n=100) if len(answered) > 1 else answered * 99
    return {"ok_s": len(answered) / seconds, "refused": tally.refused, "p50": 1000 * cut[49], "p99": 1000 * cut[98]}


def described(figures: dict[str, float]) -> str:
    return (
        f"{figures['ok_s']:.2f} ok/s ({figures['refused']:.0f} refused; p50 {figures['p50']:.0f} ms; "
        f"p99 {figures['p99']:.0f} ms)"
    )


def interleaved(
    cases: dict[str, Callable[[], object]], n: int, sync: Callable[[], None], samples: dict[str, list[float]]
) -> None:
    """n timings of each case, one of each in turn: a slow spell hits ours and the baselines alike."""
    for _ in range(n):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            sync()
            samples.setdefault(name, []).append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10 one-image requests")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clients", type=int, default=10, help="the batching row's concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="the batching row: seconds a side per round")
    parser.add_argument("--batching-only", action="store_true", help="only the model_batch and batching rows")
    args = parser.parse_args()
    args.crowd_rounds = 1 if args.quick else 3
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    rounds, n_one, n_batch = (3, 10, 2) if args.quick else (5, 40, 5)
    rounds = 0 if args.batching_only else args.rounds or rounds
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        database_url = f"sqlite:///{root / 'app.db'}"
        checkpoint_id, folder = write_checkpoint(root, database_url)
        model, _ = load_model(folder, device=device)  # the API's model, rebuilt as its Predictor does
        model.eval()
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
        pngs = [png(p) for p in pixels]
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        tensors = ((torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous().to(device)
        one = tensors[:1]

        def forward(x: torch.Tensor) -> None:
            with torch.inference_mode():
                model(x)

        def plain_gradcam() -> None:  # the library's README use: a fresh CAM object per call, full backward
            with GradCAM(model=model, target_layers=[gradcam_layer(model)]) as cam:
                cam(input_tensor=one, targets=[ClassifierOutputTarget(0)])

        port, unbatched_port = free_port(), free_port()
        server = start_api(root, database_url, args.device, port)
        unbatched = start_api(root, database_url, args.device, unbatched_port, PREDICT_MAX_BATCH="1")
        try:
            url = f"http://127.0.0.1:{port}/predict?checkpoint={checkpoint_id}"
            with httpx.Client(timeout=120) as client:

                def post(query: str, images: list[bytes]) -> None:
                    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
                    response = client.post(url + query, files=files)
                    response.raise_for_status()

                for _ in range(3 if rounds else 0):  # warm-up: loads the checkpoint, first oneDNN primitives
                    post("&gradcam=true", pngs[:1])
                    post("", pngs)
                    forward(one), forward(tensors), plain_gradcam()
                explain(model, one), explain(model, tensors[: args.clients])  # warm-up for the model alone
                samples: dict[str, list[float]] = {}
                for i in range(rounds):
                    one_image = {
                        "http_cam": lambda: post("&gradcam=true", pngs[:1]),
                        "fwd": lambda: forward(one),
                        "lib": plain_gradcam,
                    }
                    interleaved(one_image, n_one, sync, samples)
                    batches = {
                        "http_b": lambda: post("", pngs),
                        "fwd_b": lambda: forward(tensors),
                        "http_cb": lambda: post("&gradcam=true", pngs),
                    }
                    interleaved(batches, n_batch, sync, samples)
                    print(f"round {i + 1}/{rounds} done", flush=True)
                crowded = tensors[: args.clients]  # what batching can gain at most: the model alone at 1 and N
                alone = {"cam_1": lambda: explain(model, one), "cam_n": lambda: explain(model, crowded)}
                interleaved(alone, n_one, sync, samples)
            crowd = concurrency(args, {"batched": port, "unbatched": unbatched_port}, checkpoint_id, pngs[0])
        finally:
            for process in (server, unbatched):
                process.terminate()
                process.wait(timeout=30)

    p50 = {k: statistics.median(v) for k, v in samples.items()}
    print(f"device {device}, resnet18 width 64, 32x32; p50 over {rounds} rounds")
    if rounds:
        print_request_rows(p50)
    per_image = {"cam_1": 1000 * p50["cam_1"], "cam_n": 1000 * p50["cam_n"] / min(args.clients, BATCH)}
    print(
        f"model_batch{args.clients} vs model_batch1 (forward + GradCAM per image, in process): "
        f"ours {per_image['cam_n']:.2f} ms, baseline {per_image['cam_1']:.2f} ms, "
        f"ratio {per_image['cam_n'] / per_image['cam_1']:.2f} (batching can gain at most "
        f"{per_image['cam_1'] / per_image['cam_n']:.2f}x)"
    )
    ours, base = crowd["batched"], crowd["unbatched"]
    print(
        f"batching_{args.clients}: ours {described(ours)}, baseline {described(base)}, "
        f"ratio {ours['ok_s'] / max(base['ok_s'], 0.01):.3f}"
    )


def print_request_rows(p50: dict[str, float]) -> None:
    ms = {k: 1000 * v for k, v in p50.items()}
    rate = {k: BATCH / p50[k] for k in ("http_b", "fwd_b", "http_cb")}
    print(
        f"gradcam_one vs forward: ours {ms['http_cam']:.2f} ms, baseline {ms['fwd']:.2f} ms, "
        f"ratio {ms['http_cam'] / ms['fwd']:.2f}"
    )
    print(
        f"gradcam_one vs pytorch-grad-cam: ours {ms['http_cam']:.2f} ms, baseline {ms['lib']:.2f} ms, "
        f"ratio {ms['http_cam'] / ms['lib']:.2f}"
    )
    print(
        f"batch{BATCH}: ours {rate['http_b']:.0f} img/s, baseline {rate['fwd_b']:.0f} img/s, "
        f"ratio {rate['http_b'] / rate['fwd_b']:.2f}"
    )
    print(
        f"gradcam_batch{BATCH}: ours {rate['http_cb']:.0f} img/s, baseline {rate['fwd_b']:.0f} img/s, "
        f"ratio {rate['http_cb'] / rate['fwd_b']:.2f}"
    )


def concurrency(args: argparse.Namespace, ports: dict[str, int], checkpoint: str, image: bytes) -> dict[str, dict]:
    """The batching row: both APIs hammered in turn, `args.crowd_rounds` times each, the results pooled."""
    tallies = {name: Tally() for name in ports}
    for i in range(args.crowd_rounds):
        for name in list(ports) if i % 2 == 0 else list(ports)[::-1]:
            request = warmed_request(ports[name], f"/predict?checkpoint={checkpoint}&gradcam=true", image)
            before = batches_served(ports[name])
            tallies[name].merge(crowd(ports[name], request, args.clients, args.seconds))
            requests, passes = (after - first for after, first in zip(batches_served(ports[name]), before))
            print(
                f"{name} round {i + 1}: {described(summary(tallies[name], (i + 1) * args.seconds))}; "
                f"{requests / max(passes, 1):.1f} requests per forward pass",
                flush=True,
            )
    return {name: summary(tally, args.crowd_rounds * args.seconds) for name, tally in tallies.items()}


if __name__ == "__main__":
    main()
