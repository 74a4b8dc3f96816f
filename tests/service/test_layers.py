"""The imports docs/ARCHITECTURE.md draws: ml imports neither service nor worker; service never
imports worker; worker takes of service only the job store (and its schema), the settings, the broker
client and the logging setup."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER_MAY_USE = {"service", "service.store", "service.db", "service.config", "service.broker", "service.logs",
                  "service.schema"}  # fmt: skip


def imports(package: str) -> dict[str, set[str]]:
    """Each module file of `package` (relative path) and the project modules it imports."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(ROOT))] = {n for n in names if n.split(".")[0] in ("ml", "service", "worker")}
    return found


def test_ml_imports_neither_service_nor_worker() -> None:
    assert {f: n for f, n in imports("ml").items() if any(x.split(".")[0] != "ml" for x in n)} == {}


def test_service_never_imports_worker() -> None:
    assert {f: n for f, n in imports("service").items() if any(x.startswith("worker") for x in n)} == {}


def test_worker_uses_only_the_store_settings_and_broker_of_service() -> None:
    used = set().union(*imports("worker").values())
    service_modules = {name for name in used if name.startswith("service")}
    # `from service import store` reads as "service" and "service.store"; `from service.db import utcnow`
    # as "service.db" and "service.db.utcnow": the module is what counts
    modules = {name if name in WORKER_MAY_USE else name.rsplit(".", 1)[0] for name in service_modules}
    assert modules <= WORKER_MAY_USE, modules - WORKER_MAY_USE
    assert {"service.store", "service.config", "service.broker", "service.db"} <= modules  # as drawn
