"""`lrcam`, the command-line client (`python -m service.client` too). It speaks the HTTP contract
(docs/API.md) and nothing else: no torch, no service internals, so it runs wherever httpx does."""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from tqdm import tqdm

DEFAULT_URL = "http://localhost:8000"
POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 60.0  # a first prediction loads the model
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
EPILOG = """examples:
  lrcam train spec.json --watch       submit a training run and follow it epoch by epoch
  lrcam predict cat.png --gradcam     classify an image and save its GradCAM overlay
  lrcam datasets upload pets/ --wait  send a folder of train/<class>/ and test/<class>/ images

exit codes: 0 done (a watched job succeeded), 1 a watched job ended otherwise, 2 the API answered
with an error or the input is bad (the reason is printed), 3 the API is not reachable."""


class ApiError(Exception):
    """The API answered with an error status; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ApiUnreachable(Exception):
    """No answer from the API at all."""


class InputError(Exception):
    """Bad input on the client's side (a file that cannot be read)."""


def error_detail(response: httpx.Response) -> str:
    """The server's `detail`, readable: a validation error list becomes 'field: message' lines."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        return "\n".join(
            f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg', item)}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return detail if isinstance(detail, str) else json.dumps(detail)


class Api:
    """The API at `url`: JSON in and out, errors raised as ApiError / ApiUnreachable."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiUnreachable(
                f"the lrcam API is not reachable at {self.url} ({exc}).\n"
                "Start it with scripts/up (or docker compose up), or point --url / LRCAM_URL at it."
            ) from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"no answer from the lrcam API at {self.url}: {exc!r}") from exc
        if response.is_error:
            raise ApiError(response.status_code, error_detail(response))
        return response

    def get(self, path: str, **params: Any) -> Any:
        params = {name: value for name, value in params.items() if value is not None}
        return self.request("GET", path, params=params).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()


# ---- watching a job ------------------------------------------------------------------------------


def format_epoch(record: dict[str, Any], epochs: int | None) -> str:
    def number(key: str, spec: str) -> str:
        value = record.get(key)
        return "-" if value is None else format(value, spec)

    return (
        f"epoch {record.get('epoch')}/{epochs or '?'}"
        f"  train loss {number('train_loss', '.4f')} acc {number('train_acc', '.2%')}"
        f"  test loss {number('test_loss', '.4f')} acc {number('test_acc', '.2%')}"
        f"  lr {number('lr', '.4g')}  {number('images_per_second', ',.0f')} img/s  {number('seconds', '.1f')} s"
    )


class ProgressBar:
    """A tqdm bar of the steps within the current epoch (or of the whole job when it has no epochs)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.epoch: int | None = None

    def update(self, progress: dict[str, Any]) -> None:
        steps, step = progress.get("steps"), progress.get("step") or 0
        if not steps or not sys.stderr.isatty():  # in a log or a pipe, the epoch lines say enough
            return
        epoch = progress.get("epoch")
        if self.bar is None or epoch != self.epoch:
            self.close()
            self.epoch = epoch
            label = f"epoch {epoch}/{progress.get('epochs', '?')}" if epoch else "steps"
            self.bar = tqdm(total=steps, desc=label, unit="step", leave=False, dynamic_ncols=True)
        self.bar.n = min(step, steps)
        if progress.get("fraction") is not None:
            self.bar.set_postfix_str(f"{progress['fraction']:.0%} of the job", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def report_end(api: Api, job: dict[str, Any]) -> None:
    print(f"job {job['id']} {job['status']}")
    if job.get("error"):
        print(f"error: {job['error']}")
    metrics = api.get(f"/jobs/{job['id']}/metrics")
    if job["kind"] == "lr_finder":
        print(f"suggested lr: {metrics.get('suggested_lr')}")
        for name, value in (metrics.get("suggestions") or {}).items():
            print(f"  {name}: {value}")
        if metrics.get("diverged_at_lr") is not None:
            print(f"diverged at lr {metrics['diverged_at_lr']}")
        elif metrics.get("stopped_at_lr") is not None:
            print(f"stopped ({metrics['stop_reason']}) at lr {metrics['stopped_at_lr']}")
        if job["status"] == "succeeded" and metrics.get("suggested_lr") is None:
            print("no suggestion: the loss never fell clearly below where it started; try a lower start_lr")
    elif job["kind"] == "audit":
        if metrics.get("label_issues") is not None:
            print(
                f"{metrics['label_issues']} likely label errors among {metrics['images']} training images "
                f"(out-of-fold accuracy {metrics['accuracy']:.2%}, {len(metrics['folds'])} folds); "
                f"GET /jobs/{job['id']}/label-issues lists them"
            )
    elif metrics.get("best"):
        best, last = metrics["best"], metrics.get("last")
        flip = " with test-time flip" if metrics.get("test_time_flip") else ""
        if last:
            print(f"last epoch ({last['epoch']}) test accuracy {last['test_acc']:.2%}{flip}")
        chosen = metrics.get("selected_on", "test")
        print(f"best test accuracy {best['test_acc']:.2%} at epoch {best['epoch']} (chosen on the {chosen} set)")
    if job.get("checkpoint_id"):
        print(f"checkpoint {job['checkpoint_id']}")


def watch(api: Api, job_id: str, *, interval: float) -> int:
    """Follows a job until it ends: 0 when it succeeded, 1 otherwise."""
    job = api.get(f"/jobs/{job_id}")
    epochs = job["params"].get("epochs")
    printed, status = 0, None  # the last epoch printed, the last status shown
    bar = ProgressBar()
    try:
        while True:
            if job["status"] != status and job["status"] not in FINAL_STATUSES:
                status = job["status"]
                note = " (waiting for a worker)" if status == "queued" else ""
                tqdm.write(f"job {job_id} {status}{note}", file=sys.stderr)
            if job["kind"] == "train" and job["status"] != "queued":
                for record in api.get(f"/jobs/{job_id}/metrics", since_epoch=printed).get("epochs", []):
                    tqdm.write(format_epoch(record, epochs), file=sys.stdout)
                    printed = max(printed, record.get("epoch", printed))
            if job["status"] in FINAL_STATUSES:
                break
            bar.update(job.get("progress") or {})
            time.sleep(interval)
            job = api.get(f"/jobs/{job_id}")
    finally:
        bar.close()
    report_end(api, job)
    return 0 if job["status"] == "succeeded" else 1


# ---- commands ------------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the spec {path}: {exc}") from exc


def submit(endpoint: str) -> Callable[[Api, argparse.Namespace], int]:
    def command(api: Api, args: argparse.Namespace) -> int:
        job = api.post(endpoint, json=read_json(args.spec))
        print(job["id"])
        if not args.watch:
            print(f"{job['kind']} job {job['status']}; follow it with: lrcam watch {job['id']}", file=sys.stderr)
            return 0
        return watch(api, job["id"], interval=POLL_SECONDS)

    return command


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(headers)] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if progress.get("downloading"):
        done, total = progress.get("downloaded_bytes") or 0, progress.get("total_bytes")
        return f"downloading {progress['downloading']}" + (f" {done / total:.0%}" if total else "")
    epoch = f"epoch {progress['epoch']}/{progress.get('epochs', '?')} " if progress.get("epoch") else ""
    fraction = progress.get("fraction")
    return f"{epoch}{fraction:.0%}" if fraction is not None else epoch.strip()


def cmd_jobs(api: Api, args: argparse.Namespace) -> int:
    page = api.get("/jobs", status=args.status, kind=args.kind, limit=args.limit)
    rows = [
        (job["id"], job["kind"], job["status"], job["created_at"][:19], progress_text(job), (job["error"] or "")[:60])
        for job in page["jobs"]
    ]
    print_table(("ID", "KIND", "STATUS", "CREATED", "PROGRESS", "ERROR"), rows)
    print(f"{len(rows)} of {page['total']} jobs")
    return 0


def cmd_show(api: Api, args: argparse.Namespace) -> int:
    print(json.dumps(api.get(f"/jobs/{args.job_id}"), indent=2))
    return 0


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    job = api.post(f"/jobs/{args.job_id}/cancel")
    running = job["status"] == "running"  # it stops within an epoch or a few LR-finder iterations
    print(f"job {job['id']} {'stopping' if running else job['status']}")
    return 0


def cmd_watch(api: Api, args: argparse.Namespace) -> int:
    return watch(api, args.job_id, interval=POLL_SECONDS)


def cmd_artifacts(api: Api, args: argparse.Namespace) -> int:
    listing = api.get(f"/jobs/{args.job_id}/artifacts")["artifacts"]
    out = Path(args.out or args.job_id)
    out.mkdir(parents=True, exist_ok=True)
    for artifact in listing:
        path = out / Path(artifact["name"]).name  # never outside `out`
        path.write_bytes(api.request("GET", artifact["url"]).content)
        print(path)
    if not listing:
        print(f"job {args.job_id} has no artifacts yet", file=sys.stderr)
    return 0


def cmd_checkpoints(api: Api, args: argparse.Namespace) -> int:
    rows = [
        (
            c["id"],
            c["job_id"],
            f"{c['model'].get('name')}/{c['model'].get('width')}",
            c["dataset"],
            "-" if c.get("test_acc") is None else f"{c['test_acc']:.2%}",
            c.get("epoch"),
            c["created_at"][:19],
        )
        for c in api.get("/checkpoints")["checkpoints"]
    ]
    print_table(("ID", "JOB", "MODEL", "DATASET", "TEST_ACC", "EPOCH", "CREATED"), rows)
    return 0


def upload(paths: Sequence[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for name in paths:
        try:
            content = Path(name).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the image {name}: {exc}") from exc
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        files.append(("files", (Path(name).name, content, media_type)))
    return files


def cmd_predict(api: Api, args: argparse.Namespace) -> int:
    params = {
        "checkpoint": args.checkpoint,
        "gradcam": str(args.gradcam).lower(),
        "topk": args.topk,
        "method": args.method,
        "target": args.target,
    }
    answer = api.post("/predict", params=params, files=upload(args.images))
    print(f"checkpoint {answer['checkpoint_id']}")
    out = Path(args.out)
    for index, prediction in enumerate(answer["predictions"]):
        topk = ", ".join(f"{item['label']} {item['probability']:.1%}" for item in prediction["topk"])
        print(f"{prediction['filename']}: {prediction['label']} {prediction['confidence']:.1%}  (top-k: {topk})")
        if prediction.get("gradcam"):
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{index:02d}-{Path(prediction['filename']).stem}.{prediction['gradcam']['method']}.png"
            path.write_bytes(base64.b64decode(prediction["gradcam"]["overlay_png_base64"]))
            print(f"  {prediction['gradcam']['method']} for {prediction['gradcam']['target']}: {path}")
    return 0


# ---- datasets --------------------------------------------------------------------------------------


class _ReadProgress:
    """A file read by httpx in chunks, each chunk counted on a tqdm bar (to stderr, on a terminal)."""

    def __init__(self, file: BinaryIO, total: int, label: str) -> None:
        self.file = file
        self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, disable=not sys.stderr.isatty())

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.bar.update(len(chunk))
        return chunk


def archive_folder(folder: Path, out: Path) -> Path:
    """`folder` as an uncompressed tar (images are compressed already) under its own name, with a bar."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder} holds no files: expected train/<class>/* and test/<class>/*, or <class>/*")
    with tarfile.open(out, "w") as archive:
        for path in tqdm(files, desc=f"archiving {folder.name}", unit="file", disable=not sys.stderr.isatty()):
            archive.add(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}", recursive=False)
    return out


def cmd_datasets(api: Api, args: argparse.Namespace) -> int:
    rows = [
        (
            d["id"],
            d["name"],
            d["status"],
            len(d.get("classes") or []),
            sum((d.get("counts") or {}).get("train", {}).values()),
            sum((d.get("counts") or {}).get("test", {}).values()),
            d["created_at"][:19],
        )
        for d in api.get("/datasets")["uploaded"]
    ]
    print_table(("ID", "NAME", "STATUS", "CLASSES", "TRAIN", "TEST", "CREATED"), rows)
    return 0


def cmd_dataset_upload(api: Api, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path} does not exist: give an archive (.zip, .tar, .tar.gz) or a folder")
    fields = {"test_fraction": str(args.test_fraction), "seed": str(args.seed)} | (
        {"name": args.name} if args.name else {}
    )
    with tempfile.TemporaryDirectory(prefix="lrcam-") as scratch:
        archive = archive_folder(path, Path(scratch) / f"{path.name}.tar") if path.is_dir() else path
        with archive.open("rb") as file:
            reader = _ReadProgress(file, archive.stat().st_size, f"uploading {archive.name}")
            dataset = api.post("/datasets", files={"file": (archive.name, reader)}, data=fields)
            reader.bar.close()
    print(dataset["id"])
    if not args.wait:
        return 0
    while dataset["status"] == "importing":
        time.sleep(POLL_SECONDS)
        dataset = api.get(f"/datasets/{dataset['id']}")
    if dataset["status"] == "failed":
        print(f"dataset {dataset['id']} failed: {dataset['error']}", file=sys.stderr)
        return 1
    counts = dataset["counts"]
    print(
        f"dataset {dataset['id']} ready: {len(dataset['classes'])} classes, "
        f"{sum(counts['train'].values())} train and {sum(counts['test'].values())} test images"
    )
    for item in dataset.get("skipped", []):
        print(f"  skipped {item['member']}: {item['reason']}")
    return 0


def cmd_dataset_rm(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/datasets/{args.dataset_id}")
    print(f"dataset {args.dataset_id} deleted")
    return 0


def add_dataset_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    datasets = commands.add_parser("datasets", help="list uploaded datasets; upload or remove one")
    datasets.set_defaults(func=cmd_datasets)
    actions = datasets.add_subparsers(dest="action", metavar="ACTION")
    send = actions.add_parser("upload", help="upload an archive or a folder (archived on the fly); prints its id")
    send.add_argument("path", metavar="PATH")
    send.add_argument("--name", help="the dataset's name (default: the file's or folder's)")
    send.add_argument("--test-fraction", type=float, default=0.2, help="flat <class>/ layouts: held out per class")
    send.add_argument("--seed", type=int, default=0, help="flat layouts: the split's seed")
    send.add_argument("--wait", action="store_true", help="then wait for the import and print its counts")
    send.set_defaults(func=cmd_dataset_upload)
    remove = actions.add_parser("rm", help="delete an uploaded dataset (refused while a job uses it)")
    remove.add_argument("dataset_id", metavar="DATASET_ID")
    remove.set_defaults(func=cmd_dataset_rm)


# ---- the command line ----------------------------------------------------------------------------


def add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, endpoint, what in (
        ("lr-find", "/jobs/lr-finder", "an LR range test"),
        ("train", "/jobs/train", "a training run"),
        ("audit", "/jobs/audit", "a label audit of the training set (K-fold: a training spec and folds)"),
    ):
        command = commands.add_parser(name, help=f"submit {what} (a JSON spec as in docs/API.md); prints the job id")
        command.add_argument("spec", metavar="SPEC.json")
        command.add_argument("--watch", action="store_true", help="then follow it until it ends")
        command.set_defaults(func=submit(endpoint))
    for name, func, what in (
        ("watch", cmd_watch, "follow a job until it ends (exit code 0 when it succeeded)"),
        ("show", cmd_show, "a job as JSON"),
        ("cancel", cmd_cancel, "cancel a queued or running job"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("job_id", metavar="JOB_ID")
        command.set_defaults(func=func)

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    jobs.add_argument("--kind", choices=("lr_finder", "train", "audit"))
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(func=cmd_jobs)

    artifacts = commands.add_parser("artifacts", help="download all artifacts of a job")
    artifacts.add_argument("job_id", metavar="JOB_ID")
    artifacts.add_argument("--out", metavar="DIR", help="where to (default: a folder named after the job)")
    artifacts.set_defaults(func=cmd_artifacts)


def add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("checkpoints", help="list checkpoints").set_defaults(func=cmd_checkpoints)

    predict = commands.add_parser("predict", help="classify images with a checkpoint")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--checkpoint", default="latest", help="a checkpoint id, or latest (default)")
    predict.add_argument("--gradcam", action="store_true", help="also render GradCAM overlays")
    predict.add_argument("--topk", type=int, default=3)
    predict.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam")
    predict.add_argument("--target", default="pred", help="pred (default) or a class name")
    predict.add_argument("--out", default=".", metavar="DIR", help="where to save overlays (default: .)")
    predict.set_defaults(func=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrcam",
        description="Train image classifiers, find learning rates and explain predictions with a lrcam API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=os.environ.get("LRCAM_URL", DEFAULT_URL), help="the API (env LRCAM_URL)")
    parser.add_argument("--api-key", default=os.environ.get("LRCAM_API_KEY"), help="its key (env LRCAM_API_KEY)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds per request")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_job_commands(commands)
    add_model_commands(commands)
    add_dataset_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api = Api(args.url, api_key=args.api_key, timeout=args.timeout)
    try:
        exit_code: int = args.func(api, args)
        return exit_code
    except ApiError as exc:
        print(f"error: {exc.status_code}: {exc.detail}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApiUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\nstopped; a submitted job goes on (lrcam cancel JOB_ID stops it)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lrcam jobs | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would fail again
        return 1
    finally:
        api.http.close()


if __name__ == "__main__":
    sys.exit(main())
