"""The settings are described once, in core/config.py: README.md's and docs/API.md's tables and
.env.example are what `python -m core.settings_docs --write` renders from the fields, word for word."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.settings_docs import README_SETTINGS, ROOT, env_example, expected, main, markdown_table


@pytest.mark.parametrize("path", ["README.md", "docs/API.md", ".env.example"])
def test_the_committed_file_is_what_the_fields_render(path: str) -> None:
    assert (ROOT / path).read_text() == expected()[path], f"run: python -m core.settings_docs --write ({path})"


def test_the_check_command_passes_on_the_committed_files() -> None:
    assert main([]) == 0


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_has_a_description_and_a_row(name: str) -> None:
    assert Settings.model_fields[name].description
    assert f"| `{name}` |" in markdown_table()
    assert f"\n{name}=" in env_example() or f"\n# {name}=" in env_example()


def test_the_readme_selection_names_settings_that_exist() -> None:
    table = markdown_table(README_SETTINGS)
    assert all(f"| `{name}` |" in table for name in README_SETTINGS)
    assert table.count("\n| `") == len(README_SETTINGS)


def test_defaults_are_spelled_as_the_environment_reads_them() -> None:
    env = env_example()
    assert "\nDATA_DIR=./var/data\n" in env and "\n# API_KEY=\n" in env and "\nCORS_ORIGINS=\n" in env
    read = Settings(_env_file=None, DATA_DIR="./var/data", CORS_ORIGINS="", MAX_UPLOAD_BYTES="10485760")
    assert read == Settings(_env_file=None)


def test_a_pipe_in_a_description_does_not_split_its_cell() -> None:
    row = next(line for line in markdown_table().splitlines() if line.startswith("| `DATABASE_URL` |"))
    assert row.count(" | ") == 2 and r"current\|upgrade" in row
