"""scripts/up decides where to listen from the app's own settings loader: the key it sees is the key
the API sees (.env's `${VAR}` expansion included), and settings the app would refuse stop it first."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def up(tmp_path: Path, env_file: str, **values: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "lrcam.env").write_text(env_file)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEY", "LRCAM_API_KEY", "HOST", "PORT", "REDIS_URL")
    }
    env |= {
        "LRCAM_ENV_FILE": str(tmp_path / "lrcam.env"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "DATA_DIR": str(tmp_path / "data"),
        "JOB_QUEUE": "lrcam-test-up",
        **values,
    }
    return subprocess.run(["bash", "scripts/up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_key_that_expands_to_nothing_is_no_key(tmp_path: Path) -> None:
    """`API_KEY=${LRCAM_API_KEY}` with that variable unset: the app runs without a key, so up must
    not listen on every address (read with sed, the key looked set)."""
    result = up(tmp_path, "API_KEY=${LRCAM_API_KEY}\n", HOST="0.0.0.0")
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr, result.stderr
    assert "starting a Celery worker" not in result.stdout


def test_a_key_the_app_would_refuse_stops_up_with_the_fix(tmp_path: Path) -> None:
    result = up(tmp_path, "API_KEY=short\n")
    assert result.returncode != 0
    assert "at least 16 characters" in result.stderr and "openssl rand -hex 32" in result.stderr
    assert "starting a Celery worker" not in result.stdout
