"""Concurrent clients on /predict over real HTTP: N clients each post one 32x32 image with
?gradcam=true back to back for a while. Ours: the API as configured, where requests beyond
MAX_CONCURRENT_PREDICTS (16) wait for a slot (PREDICT_QUEUE 64, PREDICT_WAIT_SECONDS 10). Baseline: the
same API without a waiting queue, refusing at once whatever finds 8 predictions running
(MAX_CONCURRENT_PREDICTS=8, PREDICT_QUEUE=0), its clients retrying 50 ms after a refusal (clients that retry
at once keep a 2-core server busy refusing them; figures in bench/README.md).

    python bench/concurrency.py --quick                  # 10 clients, 3 s a side
    python bench/concurrency.py --clients 10 --seconds 20
    python bench/concurrency.py --clients 50 --seconds 20

Same checkpoint as bench/predict.py (ResNet18 width 64, random weights). Ends with
`concurrency_<N>: ours <answered/s> ok/s (<refused> refused; p50 <ms> ms; p99 <ms> ms), baseline ...,
ratio <ours/baseline>`: answered predictions per second, the latencies of the answered ones."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from clients import crowd  # beside this file
from predict import described, free_port, png, start_api, summary, warmed_request, write_checkpoint


def side(
    root: Path, database_url: str, checkpoint: str, args: argparse.Namespace, image: bytes, **settings: str
) -> dict[str, float]:
    port = free_port()
    server = start_api(root, database_url, "cpu", port, **settings)
    try:
        request = warmed_request(port, f"/predict?checkpoint={checkpoint}&gradcam=true", image)
        return summary(crowd(port, request, args.clients, args.seconds, refused_pause=0.05), args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 clients, 3 s a side")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="per side")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds = 10, 3.0
    image = png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        root = Path(tmp)
        database_url = f"sqlite:///{root / 'app.db'}"
        checkpoint, _ = write_checkpoint(root, database_url)
        ours = side(root, database_url, checkpoint, args, image)
        print(f"queue (the defaults): {described(ours)}", flush=True)
        baseline = side(root, database_url, checkpoint, args, image, MAX_CONCURRENT_PREDICTS="8", PREDICT_QUEUE="0")
        print(f"no queue (MAX_CONCURRENT_PREDICTS=8, PREDICT_QUEUE=0): {described(baseline)}", flush=True)
    print(
        f"concurrency_{args.clients}: ours {described(ours)}, baseline {described(baseline)}, "
        f"ratio {ours['ok_s'] / max(baseline['ok_s'], 0.01):.3f}"
    )


if __name__ == "__main__":
    main()
