"""The API under load while a training job runs: 50 clients polling a job's metrics and 10 submitting
predictions, for N seconds, against a stack this script starts on loopback (uvicorn + one Celery
worker, SQLite in a temporary folder, the local Redis on a queue of its own, real Fashion-MNIST).

    python bench/load.py --quick           # 10 s a phase: about 1 min on 2 cores
    python bench/load.py                   # 60 s a phase, in 3 rounds of 20 s
    python bench/load.py --pollers 50 --predictors 10 --seconds 30
    python bench/load.py --interval 0      # clients back to back (a stress test), not once a second each
    python bench/load.py --api-nice 5      # the API yields the CPU to the worker
    python bench/load.py --worker-nice 0   # no priority for the API: predictions wait for the worker
    python bench/load.py --worker-nice 10  # more priority: faster answers, slower training
    python bench/load.py --yield-to-predictions on  # training on one thread fewer while predictions come
    python bench/load.py --predict-threads 0  # predictions on every core (scripts/up: 1)
    python bench/load.py --gradcam off     # predictions without the GradCAM overlay
    python bench/load.py --busy 4          # a busy machine: 4 more processes spinning on the cores

It trains a tiny model first (the checkpoint the predictors use), then one long training job
through three phases, alternated over --rounds rounds (N seconds per phase in all), each round in
another order: nobody polling (the baseline), the pollers alone ("training while polled"), pollers
and predictors (the full load: request rates and latencies). The predictors post one image to
`/predict?gradcam=true` (--gradcam off: without the overlay). Training speed is the job's own
progress, read from the job store (not through the API the phases load) every 0.2 s: steps x batch
size per second over the reports within one epoch's training, so an epoch's end (evaluation,
checkpoint, probe maps), which falls into whichever phase it falls, is not counted as slowness of
that phase; the median of each phase's rounds. Every request is bounded (a 30 s timeout, one
connection per client) and goes to 127.0.0.1 only. The API runs with API_NICE --api-nice (0, as
scripts/up starts it; 5 lets the worker, on the same cores, have them first), the worker with
WORKER_NICE --worker-nice (3, as scripts/up starts it: predictions and polls first) and
YIELD_TO_PREDICTIONS --yield-to-predictions (off, as scripts/up; on: training on one thread fewer
while predictions come), and the load generator at niceness --client-nice (19): it stands for
clients on other machines, so it takes the CPU only when neither the API nor the worker wants it, and
its latencies are upper bounds (they include its own waits for a CPU). --busy N adds N processes
that spin on the CPU at niceness 0 throughout (other work on the machine: a build, a test run). Each
client sends a request every --interval s (1: a dashboard polling once a second; 0: back to back). Ends with
`load train: ours <img/s polled>, baseline <img/s unpolled>, ratio <r>`."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
from clients import TIMEOUT_SECONDS, Connection, Tally, get, hammer, post_file  # beside this file
from PIL import Image

from core import store
from core.db import session_for

REPO = Path(__file__).resolve().parents[1]
PROGRESS_SAMPLE_SECONDS = 0.2  # how often the job's progress is read from the store during a phase
WARMUP = {
    "dataset": {"name": "fashion_mnist", "train_subset": 256, "test_subset": 64},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 1,
    "batch_size": 64,
    "gradcam_misclassified": 0,
}
# Eager ("compile": "off"): with "auto" this long run would compile, and the first phase would pay
# the compilation of the evaluation graphs. All 60,000 training images: epochs of ~20 s, as real
# ones, so a poll returns a dozen epochs, not the hundreds a tiny subset would pile up.
LOADED = {
    "dataset": {"name": "fashion_mnist", "test_subset": 128},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 500,
    "batch_size": 64,
    "augmentation": "none",
    "scheduler": {"name": "none"},
    "gradcam_misclassified": 0,
    "compile": "off",
}


# --busy: a process that spins on the CPU until this script ends, however it ends
# (its parent's pid as its argument: read at its own start, the parent could already be gone)
SPIN = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    sum(range(100_000))"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, format="PNG")
    return buffer.getvalue()


async def load(
    clients: list[Connection],
    port: int,
    job_id: str,
    checkpoint: str,
    polled: Tally,
    predicted: Tally,
    *,
    pollers: int,
    predictors: int,
    seconds: float,
    interval: float,
    query: str,
) -> None:
    """`pollers` of the clients poll the job's metrics, the next `predictors` predict (`query` added to
    /predict's), for `seconds`."""
    until = time.monotonic() + seconds
    poll = get(f"/jobs/{job_id}/metrics", port)
    predict = post_file(f"/predict?checkpoint={checkpoint}{query}", port, "file", "x.png", png(), "image/png")
    offsets = random.Random(len(clients)).uniform  # the same spread in every phase and run
    tasks = [hammer(c, poll, polled, until, interval, offsets(0, interval)) for c in clients[:pollers]]
    tasks += [
        hammer(c, predict, predicted, until, interval, offsets(0, interval))
        for c in clients[pollers : pollers + predictors]
    ]
    await asyncio.gather(*tasks)


async def phases(stack: Stack, job_id: str, checkpoint: str, args: argparse.Namespace, window: float):
    """Training speed in each phase of each round, alternating, and the request tallies; the clients
    (one connection each) are made once, so no phase pays their start."""
    tallies = {"polled": (Tally(), Tally()), "loaded": (Tally(), Tally())}
    predictors = {"polled": 0, "loaded": args.predictors}
    speeds: dict[str, list[float]] = {"unpolled": [], "polled": [], "loaded": []}
    cpu: dict[str, Counter] = {name: Counter() for name in speeds}  # CPU seconds per process per phase
    clients = [Connection(stack.port) for _ in range(args.pollers + args.predictors)]
    names = list(speeds)
    query = "&gradcam=true" if args.gradcam == "on" else ""
    try:
        for i in range(args.rounds):  # the phases alternate on one job: drift and slow spells hit all
            for name in names[i % 3 :] + names[: i % 3]:  # each round in another order
                start, used = time.monotonic(), stack.cpu_seconds()
                sampling = asyncio.create_task(stack.sample_progress(job_id, start + window))
                if name == "unpolled":
                    await asyncio.sleep(window)
                else:
                    await load(
                        clients,
                        stack.port,
                        job_id,
                        checkpoint,
                        *tallies[name],
                        pollers=args.pollers,
                        predictors=predictors[name],
                        seconds=window,
                        interval=args.interval,
                        query=query,
                    )
                elapsed = time.monotonic() - start
                reports = await sampling
                speed, ends = training_speed(reports)
                speeds[name].append(speed)
                cpu[name].update({k: v / elapsed for k, v in (stack.cpu_seconds() - used).items()})
                note = f" ({ends} epoch end{'s' if ends > 1 else ''} left out)" if ends else ""
                print(f"round {i + 1} {name}: {speed:.0f} img/s{note}")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    rounds = args.rounds
    for name, shares in cpu.items():
        print(
            f"CPU while {name} (cores busy, mean of rounds): "
            + ", ".join(f"{k} {v / rounds:.2f}" for k, v in sorted(shares.items()))
        )
    return speeds, tallies


class Stack:
    def __init__(self, tmp: Path, redis_url: str, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
            "REDIS_URL": redis_url,
            "JOB_QUEUE": f"lrcam-load-{uuid.uuid4().hex[:8]}",
            "DATA_DIR": str(tmp / "data"),
            "ARTIFACTS_DIR": str(tmp / "artifacts"),
            "LRCAM_OFFLINE": "1",
            "API_KEY": "",
            "API_NICE": str(args.api_nice),
            "WORKER_NICE": str(args.worker_nice),
            "YIELD_TO_PREDICTIONS": args.yield_to_predictions,
            "PREDICT_THREADS": str(args.predict_threads),
        }
        self.tmp, self.processes = tmp, []
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT_SECONDS)

    def start(self) -> None:
        api = [
            sys.executable,
            "-m",
            "uvicorn",
            "service.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        worker = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        for name, command in (("api", api), ("worker", worker)):
            log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until it ends
            self.processes.append(subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log))
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API was not ready in 120 s; see {self.tmp}/api.log")
            time.sleep(0.3)

    def cpu_seconds(self) -> Counter:
        """CPU seconds used so far by the API, the worker (with its children, the DataLoader's and
        the task's) and this load generator."""
        tick = os.sysconf("SC_CLK_TCK")

        def used(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime

        api, worker = self.processes
        mine = os.times()
        return Counter({"api": used(api.pid), "worker": used(worker.pid), "generator": mine.user + mine.system})

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)

    def submit(self, spec: dict) -> str:
        response = self.http.post("/jobs/train", json=spec)
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, job_id: str, statuses: tuple[str, ...], timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.http.get(f"/jobs/{job_id}").json())["status"] not in statuses:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(0.2)
        return job

    def progress(self, job_id: str) -> dict:
        return self.http.get(f"/jobs/{job_id}").json()["progress"]

    def stored_progress(self, job_id: str) -> dict:
        """The job's progress as the worker last wrote it to the store, read from the database file
        itself: reading it through the API would load the API in the phase meant to leave it idle."""
        with session_for(self.env["DATABASE_URL"]) as session:
            job = store.get_job(session, job_id)
            return dict(job.progress) if job is not None else {}

    async def sample_progress(self, job_id: str, until: float) -> list[dict]:
        """Each distinct progress report the worker writes (about one a second) until `until`."""
        reports: list[dict] = []
        while time.monotonic() < until:
            progress = await asyncio.to_thread(self.stored_progress, job_id)
            if progress.get("updated_at") and (not reports or progress["updated_at"] != reports[-1]["updated_at"]):
                reports.append(progress)
            await asyncio.sleep(PROGRESS_SAMPLE_SECONDS)
        return reports

    @staticmethod
    def steps_done(progress: dict) -> int:
        return (progress.get("epoch", 1) - 1) * progress.get("steps", 0) + progress.get("step", 0)

    def start_training(self) -> str:
        """Submits LOADED and waits until it reports progress (past data loading and the first batches)."""
        job_id = self.submit(LOADED)
        self.wait(job_id, ("running",))
        deadline = time.monotonic() + 300
        while self.steps_done(self.progress(job_id)) == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} reported no progress in 300 s; see {self.tmp}/worker.log")
            time.sleep(0.2)
        return job_id


def training_speed(reports: list[dict]) -> tuple[float, int]:
    """Images per second over the report-to-report intervals inside one epoch's training (timed by the
    worker's own clock, `updated_at`), and how many epoch ends fell between the reports and were left
    out: the evaluation, checkpoint and probe maps at an epoch's end are not training, and counting
    them would charge them to whichever phase they fell into (0.0 when no interval is left)."""
    steps = seconds = 0.0
    ends = 0
    for before, after in zip(reports, reports[1:]):
        if (
            after.get("epoch") != before.get("epoch")
            or after.get("phase") != "training"
            or before.get("phase") != "training"
        ):
            ends += after.get("epoch") != before.get("epoch")
            continue
        steps += after["step"] - before["step"]
        elapsed = datetime.fromisoformat(after["updated_at"]) - datetime.fromisoformat(before["updated_at"])
        seconds += elapsed.total_seconds()
    return (steps * LOADED["batch_size"] / seconds if seconds else 0.0), ends


def loadavg() -> str:
    """The machine's load average (1, 5, 15 min): other work on the cores shows in it."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s a phase instead of 60 s")
    parser.add_argument(
        "--seconds", type=float, help="time in each phase, all rounds together (default 60, --quick 10)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three phases, alternating")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--predictors", type=int, default=10)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds from one request of a client to its next (0: back to back, a stress test; "
        "1: a dashboard polling every second)",
    )
    parser.add_argument("--api-nice", type=int, default=0, help="the API's API_NICE (scripts/up: 0)")
    parser.add_argument("--worker-nice", type=int, default=3, help="the worker's WORKER_NICE (scripts/up: 3)")
    parser.add_argument(
        "--yield-to-predictions",
        choices=("on", "off"),
        default="off",
        help="YIELD_TO_PREDICTIONS: training on one thread fewer while predictions come (scripts/up: off)",
    )
    parser.add_argument(
        "--predict-threads",
        type=int,
        default=1,
        help="the API's PREDICT_THREADS (scripts/up: 1, the worker training on the same cores)",
    )
    parser.add_argument(
        "--gradcam",
        choices=("on", "off"),
        default="on",
        help="predictions with the GradCAM overlay (/predict?gradcam=true), or without",
    )
    parser.add_argument("--client-nice", type=int, default=19, help="this load generator's niceness")
    parser.add_argument(
        "--busy", type=int, default=0, help="processes spinning on the CPU at niceness 0 throughout: a busy machine"
    )
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 60)
    if httpx.URL(args.redis_url).host not in ("127.0.0.1", "localhost"):
        raise SystemExit("--redis-url must be on loopback")
    with tempfile.TemporaryDirectory(prefix="lrcam-load-") as folder:
        stack = Stack(Path(folder), args.redis_url, args)
        stack.start()
        spinning = [subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())]) for _ in range(args.busy)]
        os.nice(args.client_nice)  # after starting the API, the worker and the spinners: they keep their own
        print(
            f"API_NICE {args.api_nice}, WORKER_NICE {args.worker_nice}, YIELD_TO_PREDICTIONS "
            f"{args.yield_to_predictions}, PREDICT_THREADS {args.predict_threads}, GradCAM {args.gradcam}, "
            f"load generator niceness {os.nice(0)}, interval {args.interval} s, {args.busy} spinning processes, "
            f"load average {loadavg()}"
        )
        try:
            warm = stack.wait(stack.submit(WARMUP), ("succeeded", "failed"))
            if warm["status"] != "succeeded":
                raise SystemExit(f"the warm-up job failed: {warm['error']}")
            checkpoint = warm["checkpoint_id"]
            first = stack.http.post(
                "/predict",
                params={"checkpoint": checkpoint, "gradcam": args.gradcam == "on"},
                files={"file": ("x.png", png(), "image/png")},
            )
            first.raise_for_status()  # the API imports torch and loads the model once, before any timing
            job_id = stack.start_training()
            speeds, tallies = asyncio.run(phases(stack, job_id, checkpoint, args, seconds / args.rounds))
            stack.http.post(f"/jobs/{job_id}/cancel")
            stack.wait(job_id, ("cancelled", "succeeded", "failed"))
        finally:
            for process in spinning:
                process.kill()
            stack.stop()
    print(f"load average at the end: {loadavg()} (1, 5, 15 min; this machine has {os.cpu_count()} cores)")
    unpolled, polled, loaded = (statistics.median(speeds[name]) for name in ("unpolled", "polled", "loaded"))
    print(tallies["polled"][0].line("metrics polling alone", args.pollers, seconds))
    print(tallies["loaded"][0].line("metrics polling", args.pollers, seconds))
    print(tallies["loaded"][1].line("predict", args.predictors, seconds))
    if unpolled:
        print(f"load train with predictions: {loaded:.0f} img/s, ratio {loaded / unpolled:.2f} to unpolled")
    ratio = f"{polled / unpolled:.2f}" if unpolled else "n/a (no progress unpolled)"
    print(f"load train: ours {polled:.0f} img/s (polled), baseline {unpolled:.0f} img/s (unpolled), ratio {ratio}")


if __name__ == "__main__":
    main()
