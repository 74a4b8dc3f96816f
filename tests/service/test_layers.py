"""The import graph docs/ARCHITECTURE.md draws: a neutral `core` (settings, job store, broker contract,
logs) with the HTTP side (`service`) and the Celery side (`worker`) beside each other above it, and
`ml` knowing none of them. Checked twice: the import statements of each package's files, and what
importing an entry point actually loads, transitively, in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("core", "ml", "service", "worker")


def imports(package: str) -> dict[str, set[str]]:
    """Each module file of `package` (relative path) and the project packages it imports."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = {n.split(".")[0] for n in names if n.split(".")[0] in OURS}
    return found


@pytest.mark.parametrize(
    ("package", "may_use"),
    [("core", {"core"}), ("ml", {"ml"}), ("service", {"core", "ml", "service"}), ("worker", {"core", "ml", "worker"})],
)
def test_each_package_imports_only_the_layers_below_it(package: str, may_use: set[str]) -> None:
    assert {f: n - may_use for f, n in imports(package).items() if n - may_use} == {}


def loaded_by(module: str, then: str = "") -> set[str]:
    """The top-level names and the celery/fastapi submodules in sys.modules after importing `module`
    and running the statement `then`."""
    code = (
        f"import json, sys; import {module}; {then or 'pass'}; "
        "print(json.dumps(sorted(name for name in sys.modules if '.' not in name or name.startswith('celery.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_core_loads_no_web_framework_no_celery_and_no_torch() -> None:
    loaded = loaded_by("core.store") | loaded_by("core.logs") | loaded_by("core.broker") | loaded_by("core.schema")
    assert not loaded & {"fastapi", "starlette", "celery", "kombu", "torch", "ml", "service", "worker"}


def test_the_worker_loads_no_web_framework_and_no_api_code() -> None:
    loaded = loaded_by("worker.tasks")
    assert not loaded & {"fastapi", "starlette", "service", "uvicorn"}
    assert {"torch", "celery", "core", "ml"} <= loaded  # it does train


def test_the_api_loads_no_torch_and_no_celery_worker_code() -> None:
    loaded = loaded_by("service.main")
    assert not loaded & {"torch", "worker", "albumentations", "celery.worker", "celery.concurrency"}
    assert {"fastapi", "core", "celery"} <= loaded  # it sends jobs by name through Celery's client


def test_validating_a_specs_augmentation_list_loads_albumentations_and_no_torch() -> None:
    """The API checks a submitted list of transforms against albumentations' own signatures; albumentations
    would bring torch along (its optional ToTensorV2), seconds of import inside a request."""
    flip_and_cutout = [{"name": "HorizontalFlip"}, {"name": "Cutout", "num_holes": 1, "length": 8}]
    spec = {"dataset": {"name": "fashion_mnist"}, "augmentation": flip_and_cutout}
    loaded = loaded_by("ml.specs", f"ml.specs.TrainSpec.model_validate({spec!r})")
    assert "albumentations" in loaded and "torch" not in loaded
