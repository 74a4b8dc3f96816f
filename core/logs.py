"""Logging of the API and the worker: every line carries the job id and the request id it belongs
to (`job=- req=-` when none), as text or, with LOG_FORMAT=json, one JSON object a line. A worker also
keeps each job's own lines in `<ARTIFACTS_DIR>/<job id>/job.log` (at most JOB_LOG_BYTES), served by
`GET /jobs/{id}/log`, so that a failed job explains itself without a shell on the worker."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Literal, TextIO

job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)  # set by the worker for its job
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)  # set by the API per request
LogFormat = Literal["text", "json"]
TEXT = "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s req=%(request_id)s] %(message)s"
JOB_LOG = "job.log"
JOB_LOG_BYTES = 1024 * 1024  # a job's own log; beyond it lines are dropped, saying so once


def server_roots(data_dir: Path, artifacts_dir: Path) -> dict[str, Path]:
    """The server's folders that texts shown to users name by setting, not by path."""
    code = Path(__file__).resolve().parents[1]
    return {
        "DATA_DIR": data_dir.resolve(),
        "ARTIFACTS_DIR": artifacts_dir.resolve(),
        "<lrcam>": code,
        "<python>": Path(sys.prefix).resolve(),
        "<python base>": Path(sys.base_prefix).resolve(),
        "~": Path.home(),
    }


def redact(text: str, roots: Mapping[str, Path]) -> str:
    """`text` with each server folder written as its name: a job's error and log, shown over HTTP,
    carry no server paths ("DATA_DIR/cifar-10-batches-py", not "/srv/lrcam/data/...")."""
    for name, root in sorted(roots.items(), key=lambda item: -len(str(item[1]))):
        if str(root) not in ("/", "."):
            text = text.replace(str(root), name)
    return text


class ContextFilter(logging.Filter):
    """Stamps each record with the job and request it belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = getattr(record, "job_id", None) or job_id_var.get() or "-"
        record.request_id = getattr(record, "request_id", None) or request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": None if record.job_id == "-" else record.job_id,  # type: ignore[attr-defined]
            "request_id": None if record.request_id == "-" else record.request_id,  # type: ignore[attr-defined]
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a line is written (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT)


OWN_LOGGERS = ("core", "service", "worker", "ml", "celery")  # at `level`; every other library's at WARNING


def configure(log_format: LogFormat, level: int | str = logging.INFO) -> None:
    """One handler on the root logger (stderr), its records stamped; replaces an earlier one. Our
    loggers (and Celery's) log at `level`, other libraries' (httpx, ...) from WARNING up."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "lrcam", False)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.lrcam = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


class JobLogHandler(logging.Handler):
    """Appends the records of one job (by `job_id_var`) to its folder's job.log, up to a size."""

    def __init__(
        self, job_id: str, folder: Path, *, roots: Mapping[str, Path] | None = None, max_bytes: int = JOB_LOG_BYTES
    ) -> None:
        """`roots`: server folders to write by name in the lines (served over HTTP; see `redact`)."""
        super().__init__(logging.INFO)
        self.job_id = job_id
        self.path = folder / JOB_LOG
        self.roots = roots or {}
        self.max_bytes = max_bytes
        self.addFilter(ContextFilter())
        self.setFormatter(logging.Formatter(TEXT))

    def emit(self, record: logging.LogRecord) -> None:
        if job_id_var.get() != self.job_id and getattr(record, "job_id", None) != self.job_id:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size >= self.max_bytes:
                return
            line = redact(self.format(record), self.roots) + "\n"
            if size + len(line.encode()) > self.max_bytes:
                line = (
                    f"... job.log reached {self.max_bytes} bytes (JOB_LOG_BYTES); later lines are in the worker's log\n"
                )
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line)
        except OSError:
            self.handleError(record)
