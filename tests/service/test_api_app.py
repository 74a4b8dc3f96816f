"""The app as a whole: health and readiness, the API key, CORS, the catalogue, the OpenAPI document,
503s when the store or the broker is down, and no torch on import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from api_support import DEAD_REDIS_URL, FakeBroker, TestClient, make_client

from core.config import Settings
from ml.specs import TrainSpec
from service.routers.catalogue import PRESETS

DEAD_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1
LABELS = {"name", "tags", "note"}  # beside the spec in a submission

CONTRACT = {
    "/health": {"get"},
    "/ready": {"get"},
    "/models": {"get"},
    "/datasets": {"get"},
    "/jobs": {"get"},
    "/jobs/lr-finder": {"post"},
    "/jobs/train": {"post"},
    "/jobs/{job_id}": {"get", "patch", "delete"},
    "/jobs/{job_id}/cancel": {"post"},
    "/jobs/{job_id}/metrics": {"get"},
    "/jobs/{job_id}/artifacts": {"get"},
    "/jobs/{job_id}/artifacts/{name}": {"get"},
    "/checkpoints": {"get"},
    "/checkpoints/{checkpoint_id}": {"get"},
    "/predict": {"post"},
}


def test_import_service_main_leaves_torch_out() -> None:
    code = "import sys, service.main; assert 'torch' not in sys.modules, 'torch imported'; print('clean')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr


def test_openapi_has_every_contract_path(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, methods in CONTRACT.items():
        assert methods <= set(document["paths"].get(path, {})), path
    train = document["paths"]["/jobs/train"]["post"]
    assert "202" in train["responses"] and "TrainJobCreate" in str(train["requestBody"])
    schemas = document["components"]["schemas"]  # the spec, and the run's labels beside it
    assert set(schemas["TrainJobCreate"]["properties"]) == set(schemas["TrainSpec"]["properties"]) | LABELS
    assert set(schemas["LRFinderJobCreate"]["properties"]) == set(schemas["LRFinderSpec"]["properties"]) | LABELS
    upload = document["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(upload["properties"]) == {"file", "files"}
    query = {p["name"] for p in document["paths"]["/predict"]["post"]["parameters"]}
    assert query == {"checkpoint", "gradcam", "topk", "method", "target", "calibrated"}


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "store": "ok", "broker": "ok"}


def test_ready_with_the_real_broker(settings: Settings) -> None:
    with make_client() as client:  # Redis runs at 127.0.0.1:6379 for the tests
        assert client.get("/ready").status_code == 200


def test_ready_names_the_broker_when_it_is_down(configure) -> None:
    configure(REDIS_URL=DEAD_REDIS_URL)
    with make_client() as client:
        response = client.get("/ready")
        assert client.get("/health").status_code == 200
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail["store"] == "ok" and "broker unreachable (REDIS_URL)" in detail["broker"]
    assert "127.0.0.1" not in str(detail), "an error text must not carry the broker's address"


def test_a_store_that_is_down_is_503_naming_it(configure) -> None:
    configure(DATABASE_URL=DEAD_POSTGRES_URL)
    with make_client(FakeBroker()) as client:  # the app starts anyway: /health answers
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        jobs = client.get("/jobs")
        posted = client.post("/jobs/lr-finder", json={"dataset": {"name": "cifar10"}})
    assert ready.status_code == 503 and "job store unreachable" in ready.json()["detail"]["store"]
    assert "127.0.0.1" not in ready.text and "postgres" not in ready.text.lower(), "no host, port or user"
    assert ready.json()["detail"]["broker"] == "ok"
    for response in (jobs, posted):
        assert response.status_code == 503 and "job store unreachable (DATABASE_URL)" in response.json()["detail"]
        assert "127.0.0.1" not in response.text


def test_api_key_guards_every_endpoint_but_health(configure) -> None:
    configure(API_KEY="s3cret-key-0123456789")
    with make_client(FakeBroker()) as client:
        assert client.get("/health").status_code == 200
        for path in ("/jobs", "/ready", "/models", "/datasets", "/checkpoints", "/jobs/x"):
            missing = client.get(path)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
            assert "missing API key" in missing.json()["detail"]
        wrong = client.get("/jobs", headers={"Authorization": "Bearer s3cret-kez"})
        assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
        basic = client.get("/jobs", headers={"Authorization": "Basic czNjcmV0LWtleQ=="})
        assert basic.status_code == 401
        for method, path in (("POST", "/jobs/train"), ("POST", "/predict"), ("POST", "/jobs/x/cancel")):
            assert client.request(method, path).status_code == 401, path
        good = {"Authorization": "Bearer s3cret-key-0123456789"}
        assert client.get("/jobs", headers=good).status_code == 200
        assert client.post("/jobs/train", headers=good, json={"dataset": {"name": "cifar10"}}).status_code == 202


def test_an_empty_api_key_means_no_key(configure) -> None:
    assert configure(API_KEY="").API_KEY is None


def test_cors_is_closed_unless_origins_are_set(configure) -> None:
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    with make_client(FakeBroker()) as client:
        assert "access-control-allow-origin" not in client.options("/jobs", headers=preflight).headers
    configure(CORS_ORIGINS="https://dash.example, https://other.example")
    with make_client(FakeBroker()) as client:
        allowed = client.options("/jobs", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_models_catalogue(client: TestClient) -> None:
    body = client.get("/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert models["resnet18"]["parameters_at_width_64"] == 11_173_962
    assert models["custom_resnet"]["parameters_at_width_64"] == 6_573_130
    assert models["resnet18"]["options"]["width"] == {
        **models["resnet18"]["options"]["width"],
        "default": 64,
        "min": 2,
        "max": 256,
    }
    assert body["presets"] == PRESETS


@pytest.mark.parametrize("name", ["resnet18", "custom_resnet"])
def test_catalogue_parameter_counts_are_the_real_models(name: str) -> None:
    from ml.models import build_model, count_parameters
    from ml.specs import ModelSpec
    from service.routers.catalogue import MODELS

    model = build_model(ModelSpec(name=name, width=64), in_channels=3, num_classes=10)
    assert count_parameters(model) == MODELS[name]["parameters_at_width_64"]


def test_every_preset_is_a_valid_train_spec() -> None:
    for preset in PRESETS:
        assert {"name", "description", "spec"} <= set(preset)
        TrainSpec.model_validate(preset["spec"])


def test_datasets_catalogue(client: TestClient, configure, image_folder_data_dir, cifar_data_dir) -> None:
    datasets = {d["name"]: d for d in client.get("/datasets").json()["datasets"]}
    assert set(datasets) == {"cifar10", "fashion_mnist", "image_folder", "uploaded"}
    assert datasets["cifar10"]["present"] is False and datasets["image_folder"]["folders"] == []
    assert datasets["uploaded"]["present"] is False  # none uploaded yet
    assert datasets["fashion_mnist"]["present"] is True  # the system copy in /usr/share/datasets
    assert "cifar-10-batches-py" in datasets["cifar10"]["layout"] and len(datasets["cifar10"]["classes"]) == 10
    configure(DATA_DIR=cifar_data_dir)
    with make_client(FakeBroker()) as other:
        assert other.get("/datasets").json()["datasets"][0]["present"] is True
    configure(DATA_DIR=image_folder_data_dir)
    with make_client(FakeBroker()) as other:
        folder = other.get("/datasets").json()["datasets"][2]
    assert folder["present"] is True and folder["folders"] == ["shapes"]
