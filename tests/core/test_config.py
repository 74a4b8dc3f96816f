"""The settings: a bad value fails fast naming its variable and what it accepts; a .env file is read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import Settings


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("REDIS_URL", "localhost:6379", "REDIS_URL must start with"),
        ("DATABASE_URL", "mysql://x@y/z", "sqlite:/// or postgresql+psycopg://"),
        ("DATABASE_URL", "not a url", "not a database URL"),
        ("MAX_UPLOAD_BYTES", "0", "greater than 0"),
        ("JOB_LEASE_SECONDS", "-1", "greater than 0"),
    ],
)
def test_bad_settings_fail_fast_naming_the_variable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert name in str(raised.value) and words in str(raised.value)


def test_settings_read_a_dotenv_file(settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOB_QUEUE")
    (tmp_path / ".env").write_text("JOB_QUEUE=from-dotenv\nCORS_ORIGINS=https://a.example\n")
    loaded = Settings()
    assert loaded.JOB_QUEUE == "from-dotenv" and loaded.CORS_ORIGINS == ["https://a.example"]
    assert loaded.MAX_UPLOAD_BYTES == 10 * 1024 * 1024 and loaded.API_KEY is None
