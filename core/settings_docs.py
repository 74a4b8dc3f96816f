"""The settings' documentation, rendered from `Settings`' fields: the tables of README.md and
docs/API.md (between their `settings table` markers) and the whole of `.env.example`.

    python -m core.settings_docs           exits 1, naming the files that differ from the fields
    python -m core.settings_docs --write   rewrites them"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path, PurePath

from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- settings table: generated from core/config.py by `python -m core.settings_docs --write` -->"
END = "<!-- end of the settings table -->"

# Read by ml.downloads, which imports nothing from core: documented beside the settings.
ENGINE_VARIABLES = {
    "LRCAM_OFFLINE": "`1`: never download a dataset; a missing one fails at once, saying where to put its files",
}
# The README's shorter table: what a first deployment sets; docs/API.md and .env.example list all.
README_SETTINGS = (
    "REDIS_URL",
    "DATABASE_URL",
    "DATA_DIR",
    "ARTIFACTS_DIR",
    "API_KEY",
    "WORKER_DEVICE",
    "PREDICT_DEVICE",
    "PREDICT_THREADS",
    "WORKER_NICE",
    "YIELD_TO_PREDICTIONS",
    "LOG_FORMAT",
    "CORS_ORIGINS",
    "ALLOWED_HOSTS",
    "LRCAM_OFFLINE",
)
ENV_HEADER = """\
# lrcam settings. Copy to .env and edit: the API and the worker read .env (variables set in the
# environment win), and docker compose reads it to fill in docker-compose.yml. The values shown are
# the defaults. Generated from core/config.py by `python -m core.settings_docs --write`.
"""
ENV_FOOTER = """\
# docker compose only: the password of the lrcam user of the PostgreSQL container (compose refuses
# to start without one; it goes into a URL, so keep to letters and digits).
# POSTGRES_PASSWORD=
"""


def _value(value: object) -> str:
    """A default as the environment spells it."""
    if isinstance(value, PurePath):
        text = value.as_posix()
        return text if value.is_absolute() or text.startswith(".") else f"./{text}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)


def rows() -> list[tuple[str, str | None, str]]:
    """(name, default or None when unset, description) for every setting, then the engine's variables."""
    found: list[tuple[str, str | None, str]] = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        found.append((name, None if default is None else _value(default), field.description or ""))
    return found + [(name, None, text) for name, text in ENGINE_VARIABLES.items()]


def markdown_table(names: tuple[str, ...] | None = None) -> str:
    """The settings table, every row or only `names` in that order, between its markers."""
    by_name = {name: (default, text) for name, default, text in rows()}
    lines = [BEGIN, "", "| variable | default | meaning |", "| --- | --- | --- |"]
    for name in names or tuple(by_name):
        default, text = by_name[name]
        shown = "unset" if default is None else f"`{default}`" if default else "empty"
        lines.append(f"| `{name}` | {shown} | {text.replace('|', chr(92) + '|')} |")
    return "\n".join([*lines, "", END])


def env_example() -> str:
    """The whole of `.env.example`: each setting's description as a comment above it."""
    blocks = [ENV_HEADER]
    for name, default, text in rows():
        comment = textwrap.fill(
            text.replace("`", ""),
            width=100,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        assignment = f"# {name}=" if default is None else f"{name}={default}"
        if name in ENGINE_VARIABLES:
            assignment = f"# {name}=1"
        blocks.append(f"{comment}\n{assignment}\n")
    return "\n".join([*blocks, ENV_FOOTER])


def _with_table(text: str, table: str, path: str) -> str:
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{path} lacks the settings table's markers {BEGIN!r} ... {END!r}")
    return head + table + tail


def expected() -> dict[str, str]:
    """Each generated file's text as the fields make it, by path relative to the repository root."""
    readme = (ROOT / "README.md").read_text()
    api = (ROOT / "docs/API.md").read_text()
    return {
        "README.md": _with_table(readme, markdown_table(README_SETTINGS), "README.md"),
        "docs/API.md": _with_table(api, markdown_table(), "docs/API.md"),
        ".env.example": env_example(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.settings_docs", description="the settings' documentation")
    parser.add_argument("--write", action="store_true", help="rewrite the files instead of checking them")
    args = parser.parse_args(argv)
    stale = [path for path, text in expected().items() if (ROOT / path).read_text() != text]
    if args.write:
        for path in stale:
            (ROOT / path).write_text(expected()[path])
            print(f"wrote {path}")
        return 0
    for path in stale:
        print(f"{path} differs from core/config.py's settings: python -m core.settings_docs --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
