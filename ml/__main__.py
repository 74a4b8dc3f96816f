"""The command line: LR range tests, training and prediction on one machine, no server.

    python -m ml lr-find spec.json --out runs/lr1
    python -m ml train   spec.json --out runs/t1
    python -m ml audit   spec.json --out runs/a1
    python -m ml predict --checkpoint runs/t1/checkpoints/best IMAGE... --gradcam

`spec.json` is the JSON body of POST /jobs/lr-finder, POST /jobs/train or POST /jobs/audit. In a train spec,
`"lr": "auto"` with `"lr_finder_job": "runs/lr1"` takes that LR-finder run's suggestion."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from ml.specs import AuditSpec, LRFinderSpec, TrainSpec

_Spec = TypeVar("_Spec", TrainSpec, LRFinderSpec, AuditSpec)
_Train = TypeVar("_Train", bound=TrainSpec)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "./var/data")),
        help="where datasets live (env DATA_DIR; default ./var/data)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if any)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("lr-find", "LR range test"),
        ("train", "train a model"),
        ("audit", "K-fold label audit of the training set: its likely label errors"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("spec", type=Path, help="JSON spec: the body of the matching POST /jobs/... request")
        cmd.add_argument("--out", type=Path, required=True, help="output folder (created)")
    predict = sub.add_parser("predict", help="classify images with a checkpoint, optionally with GradCAM")
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint folder, e.g. runs/t1/checkpoints/best"
    )
    predict.add_argument("--topk", type=int, default=3)
    predict.add_argument("--gradcam", action="store_true", help="also write a GradCAM overlay PNG per image")
    predict.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"])
    predict.add_argument("--target", default="pred", help='"pred" or a class name')
    predict.add_argument("--out", type=Path, default=Path("."), help="where GradCAM overlays are written")
    return parser


def _load_spec(path: Path, model: type[_Spec]) -> _Spec:
    try:
        return model.model_validate_json(path.read_text())
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise SystemExit(f"invalid spec {path}:\n{exc}") from None


def _resolve_auto_lr(spec: _Train) -> _Train:
    if spec.optimizer.lr != "auto":
        return spec
    metrics_path = Path(str(spec.optimizer.lr_finder_job)) / "metrics.json"
    try:
        suggested = json.loads(metrics_path.read_text()).get("suggested_lr")
    except (OSError, ValueError) as exc:
        raise SystemExit(f'lr "auto": cannot read the LR-finder run {metrics_path}: {exc}') from None
    if not suggested:
        raise SystemExit(
            f'lr "auto": the LR-finder run {metrics_path} gave no suggestion: its loss never fell clearly below '
            "where it started; run it again with a lower start_lr, or give optimizer.lr as a number"
        )
    print(f"lr auto: using {suggested:.4g} from {metrics_path}", file=sys.stderr)
    return spec.with_lr(float(suggested))


def cmd_lr_find(args: argparse.Namespace) -> int:
    from ml.console import ConsoleCallbacks
    from ml.lr_finder import run_lr_finder

    spec = _load_spec(args.spec, LRFinderSpec)
    with ConsoleCallbacks(label="lr-find") as callbacks:
        result = run_lr_finder(spec, data_dir=args.data_dir, out_dir=args.out, callbacks=callbacks, device=args.device)
    m = result.metrics
    print(
        json.dumps(
            {
                "stop_reason": result.stop_reason,
                "suggested_lr": m["suggested_lr"],
                "suggestions": m["suggestions"],
                "diverged_at_lr": m["diverged_at_lr"],
                "stopped_at_lr": m["stopped_at_lr"],
                "out": str(args.out),
            },
            indent=1,
        )
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ml.console import ConsoleCallbacks
    from ml.trainer import train

    spec = _resolve_auto_lr(_load_spec(args.spec, TrainSpec))
    with ConsoleCallbacks(label="train") as callbacks:
        result = train(spec, data_dir=args.data_dir, out_dir=args.out, callbacks=callbacks, device=args.device)
    print(
        json.dumps(
            {
                "stop_reason": result.stop_reason,
                "best": result.metrics["best"],
                "best_checkpoint": str(result.best_checkpoint),
                "out": str(args.out),
                "artifacts": [p.name for p in result.artifacts],
            },
            indent=1,
        )
    )
    return 0 if result.stop_reason != "cancelled" else 130


def cmd_audit(args: argparse.Namespace) -> int:
    from ml.audit import audit
    from ml.console import ConsoleCallbacks

    spec = _resolve_auto_lr(_load_spec(args.spec, AuditSpec))
    with ConsoleCallbacks(label="audit") as callbacks:
        result = audit(spec, data_dir=args.data_dir, out_dir=args.out, callbacks=callbacks, device=args.device)
    print(json.dumps(result.metrics | {"out": str(args.out)}, indent=1))
    return 0 if result.stop_reason != "cancelled" else 130


def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from ml.predictor import Predictor

    predictor = Predictor(args.checkpoint, device=args.device)
    images: list[Image.Image] = []
    for path in args.images:
        with Image.open(path) as image:
            image.load()
            images.append(image)
    results = predictor.predict(images, topk=args.topk, gradcam=args.gradcam, method=args.method, target=args.target)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, result in zip(args.images, results):
        cam = result.pop("gradcam")
        line = {"file": str(path), **result}
        if cam is not None:
            overlay_path = args.out / f"{path.stem}_{cam['method'].replace('+', 'p')}.png"
            overlay_path.write_bytes(base64.b64decode(cam["overlay_png_base64"]))
            line["gradcam_overlay"] = str(overlay_path)
        print(json.dumps(line))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"lr-find": cmd_lr_find, "train": cmd_train, "audit": cmd_audit, "predict": cmd_predict}
    try:
        return commands[args.command](args)
    except ValueError as exc:  # bad input: a missing dataset, an unknown class name, a bad checkpoint...
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
