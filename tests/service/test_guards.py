"""Attacks on a running API, each reproduced and refused: a web page reaching a keyless server by DNS
rebinding or by a cross-site request, a client elsewhere reaching a keyless server, guessing the key,
paging past the store's integers, framing or feeding scripts to the pages, and a password printed
from a bad URL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from api_support import FakeBroker, TestClient, make_client
from pydantic import ValidationError

from core.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]
KEY = "guards-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
LR_FINDER = {"dataset": {"name": "fashion_mnist", "train_subset": 100}, "num_iter": 10}


def remote_client(address: str, *, url: str = "http://localhost") -> TestClient:
    return TestClient(create_app(), base_url=url, client=(address, 40000))


def test_dns_rebinding_a_keyless_server_reads_and_starts_nothing(settings) -> None:
    broker = FakeBroker()
    rebound = {"Host": "rebind.attacker.example:8000"}
    with make_client(broker) as client:
        listed = client.get("/jobs", headers=rebound)
        started = client.post("/jobs/lr-finder", json=LR_FINDER, headers=rebound)
        for answer in (listed, started):
            assert answer.status_code == 403, answer.text
            assert "rebind.attacker.example" in answer.json()["detail"] and "ALLOWED_HOSTS" in answer.json()["detail"]
        assert broker.sent == []
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.2"):
            assert client.get("/jobs", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_names_more_hosts(configure) -> None:
    configure(ALLOWED_HOSTS="lab.local, *.example.org")
    with make_client(FakeBroker()) as client:
        for host, code in (("lab.local", 200), ("gpu.example.org:8000", 200), ("example.org.evil", 403)):
            assert client.get("/jobs", headers={"Host": host}).status_code == code, host


def test_a_keyless_server_answers_no_client_elsewhere(settings) -> None:
    """What `docker run` of the API image without a key gives: the client is another address."""
    with remote_client("172.17.0.1") as remote:
        for path in ("/jobs", "/", "/checkpoints"):
            answer = remote.get(path)
            assert answer.status_code == 403 and "API_KEY" in answer.json()["detail"], path


def test_with_a_key_a_client_elsewhere_must_authenticate(configure) -> None:
    configure(API_KEY=KEY)
    with remote_client("203.0.113.7", url="http://lrcam.example") as remote:
        assert remote.get("/jobs").status_code == 401
        assert remote.get("/jobs", headers=AUTH).status_code == 200


def test_a_cross_site_request_cannot_cancel_or_start_jobs(configure, broker) -> None:
    with make_client(broker) as client:
        job = client.post("/jobs/lr-finder", json=LR_FINDER).json()
        evil = {"Origin": "https://evil.example"}
        cancel = client.post(f"/jobs/{job['id']}/cancel", headers=evil)
        assert cancel.status_code == 403 and "CORS_ORIGINS" in cancel.json()["detail"]
        assert client.post("/jobs/lr-finder", json=LR_FINDER, headers=evil).status_code == 403
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"
        assert len(broker.sent) == 1
        own = client.post(f"/jobs/{job['id']}/cancel", headers={"Origin": "http://localhost"})
        assert own.status_code == 202 and own.json()["status"] == "cancelled"
    configure(API_KEY=KEY, CORS_ORIGINS="https://dash.example")
    with make_client(broker) as client:
        assert client.post("/jobs/lr-finder", json=LR_FINDER, headers=AUTH | {"Origin": "null"}).status_code == 403
        listed = client.post("/jobs/lr-finder", json=LR_FINDER, headers=AUTH | {"Origin": "https://dash.example"})
        assert listed.status_code == 202


def test_wrong_keys_are_throttled_per_client(configure) -> None:
    configure(API_KEY=KEY, AUTH_FAILURES_PER_MINUTE="3")
    with make_client(FakeBroker()) as client:
        for _ in range(5):
            assert client.get("/jobs").status_code == 401  # a missing key is no guess: not counted
        for _ in range(3):
            assert client.get("/jobs", headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401
        throttled = client.get("/jobs", headers=AUTH)  # even the right key, until the minute has passed
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
        other = TestClient(client.app, base_url="http://localhost", client=("127.0.0.9", 1))
        assert other.get("/jobs", headers=AUTH).status_code == 200  # another client is not concerned


def test_a_short_key_is_refused_at_startup_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters.*openssl rand -hex 32"):
        Settings(_env_file=None, API_KEY="s3cret")


def test_every_page_is_unframeable_and_runs_scripts_from_this_server_only(settings) -> None:
    with make_client(FakeBroker()) as client:
        for path in ("/", "/docs"):
            page = client.get(path)
            assert page.status_code == 200
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
            assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert "<script>" not in page.text and "cdn" not in page.text.lower(), "no inline script, no CDN"
        assert client.get("/jobs").headers["x-content-type-options"] == "nosniff"
        assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
        assert client.get("/static/js/docs.js").status_code == 200
        assert client.get("/redoc").status_code == 404


def test_paging_past_the_stores_integers_is_a_422(settings) -> None:
    with make_client(FakeBroker()) as client:
        for path in ("/checkpoints?offset=378240571154815516672&limit=70", "/jobs?offset=99999999999999999999"):
            answer = client.get(path)
            assert answer.status_code == 422 and "offset" in answer.text, path
        answer = client.get("/jobs/x/metrics?since_epoch=99999999999999999999")
        assert answer.status_code == 422
        schema = client.get("/openapi.json").json()
    unbounded = [
        f"{method.upper()} {path} {parameter['name']}"
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        for parameter in operation.get("parameters", [])
        if parameter["schema"].get("type") in ("integer", "number") and "maximum" not in parameter["schema"]
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    "name, value",
    [("DATABASE_URL", "mysql://lrcam:hunter2-secret@db/lrcam"), ("REDIS_URL", "http://:hunter2-secret@redis:6379/0")],
)
def test_a_bad_url_never_prints_its_password(tmp_path: Path, name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "API_KEY")}
    result = subprocess.run(
        [sys.executable, "-c", "import service.main"],
        cwd=tmp_path,
        env=env | {name: value, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and name in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "***" in result.stderr


def test_an_unreachable_store_at_startup_logs_no_password(configure, caplog: pytest.LogCaptureFixture) -> None:
    configure(DATABASE_URL="postgresql://lrcam:hunter2-secret@127.0.0.1:1/lrcam")
    with caplog.at_level(logging.INFO), make_client(FakeBroker()) as client:
        assert client.get("/jobs").status_code == 503
    assert "job store unreachable" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.parametrize("kind", ["train", "lr-finder"])
def test_a_spec_with_sizes_far_beyond_its_images_is_refused_before_anything_is_built(settings, kind: str) -> None:
    """PadIfNeeded to 60000 px would allocate 10.8 GB per image in the worker."""
    spec = {
        "dataset": {"name": "cifar10"},
        "augmentation": [
            {"name": "PadIfNeeded", "min_height": 60000, "min_width": 60000},
            {"name": "RandomCrop", "height": 32, "width": 32},
        ],
    }
    broker = FakeBroker()
    with make_client(broker) as client:
        answer = client.post(f"/jobs/{kind}", json=spec)
        assert answer.status_code == 422
        error = answer.json()["detail"][0]
        assert error["loc"][-1] == "augmentation"
        assert "PadIfNeeded: min_height=60000" in error["msg"] and "at most 128 px" in error["msg"]
        folder = {"name": "image_folder", "path": "pets", "image_size": 64}  # 4x 64 px: 256 px is allowed
        fine = spec | {
            "dataset": folder,
            "augmentation": [{"name": "PadIfNeeded", "min_height": 256, "min_width": 256}],
        }
        answer = client.post(f"/jobs/{kind}", json=fine)
        assert answer.status_code != 422 or "augmentation" not in answer.text, answer.text
    assert broker.sent == []
