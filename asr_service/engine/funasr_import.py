"""Import FunASR with only the modules the configured models need.

`import funasr` runs funasr/__init__.py, which imports every module of the package (about 700)
so that each class registers itself in `funasr.register.tables` under the name a model's
config.yaml uses. With them come transformers, numba, scikit-learn's model selection and the
rest: 6.4 s of CPU for each worker process or engine process that loads a model, where a
Paraformer with its VAD needs a dozen modules (3 s, most of it torch).

So a process here creates the `funasr` package without running its __init__, reads the class
names each local model directory's config.yaml gives (model, encoder, decoder, frontend, ...),
and imports the module that registers each one: the module a full import leaves registered,
from REGISTRY_FILE (a name some other module took since is registered again by its own). That
file is generated from a full import (`python -m asr_service.engine.funasr_import` writes it)
and tests/integration/test_funasr_engine.py checks it against one. A name it lacks, a model that
is not a local directory (a hub alias: its config comes with the download), or another FunASR
version: the full import, as before. Either way `funasr.AutoModel` is FunASR's own.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)
REGISTRY_FILE = Path(__file__).with_name("funasr_registry.json")


def auto_model(*models: str | None) -> Any:
    """FunASR's AutoModel class, with what `models` (directories or aliases) need imported."""
    package = _package()
    if not getattr(package, "_asr_service_complete", False):
        needed = _classes_for(m for m in models if m)
        if needed is None:
            _complete(package)
        else:
            _import_registering(needed)
    return importlib.import_module("funasr.auto.auto_model").AutoModel


def _import_registering(needed: list[tuple[str, str, str]]) -> None:
    """Import the module of each (table, name, module); where another module registered the
    same name after it (the last import wins), run it again so it wins, as in a full import."""
    importlib.import_module("funasr.auto.auto_model")
    for module in dict.fromkeys(module for _, _, module in needed):
        importlib.import_module(module)
    from funasr.register import tables

    for table, name, module in needed:
        if getattr(tables, table)[name].__module__ != module:
            importlib.reload(sys.modules[module])


def _package() -> ModuleType:
    """The `funasr` package: the one already imported, or a new one whose __init__ has not
    run (submodules import from it as from the real one)."""
    if "funasr" in sys.modules:
        package = sys.modules["funasr"]
        if not hasattr(package, "_asr_service_complete"):  # imported by someone else: whole
            package._asr_service_complete = True  # type: ignore[attr-defined]
        return package
    spec = importlib.util.find_spec("funasr")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise ImportError("funasr is not installed")
    package = importlib.util.module_from_spec(spec)
    root = Path(next(iter(spec.submodule_search_locations)))
    package.__version__ = (root / "version.txt").read_text().strip()  # type: ignore[attr-defined]
    package._asr_service_complete = False  # type: ignore[attr-defined]

    def whole_on_first_use(name: str) -> Any:  # `from funasr import AutoModel` elsewhere
        if name.startswith("__"):  # probes of the import system, inspect, pickle...
            raise AttributeError(name)
        _complete(package)  # FunASR's __init__ replaces this __getattr__ with its own
        if vars(package).get("__getattr__") is whole_on_first_use:
            raise AttributeError(f"module 'funasr' has no attribute {name!r}")
        return getattr(package, name)

    package.__getattr__ = whole_on_first_use  # type: ignore[attr-defined]
    sys.modules["funasr"] = package
    return package


def _complete(package: ModuleType) -> None:
    """Run funasr/__init__.py in the package: every module is imported, as `import funasr`."""
    spec = package.__spec__
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(package)
    package._asr_service_complete = True  # type: ignore[attr-defined]


def _classes_for(models: Iterable[str]) -> list[tuple[str, str, str]] | None:
    """(table, name, module registering it) for every class the models' configs name; None:
    import the whole package."""
    registry = _registry()
    if registry is None:
        return None
    needed = []
    for model in models:
        config = Path(model).expanduser() / "config.yaml"
        if not config.is_file():
            return None  # a hub alias: which classes it needs is known after the download
        for table, name in _class_names(config):
            if table not in registry:
                continue  # a file name or a setting, not a class
            module = registry[table].get(name)
            if module is None:
                log.info("FunASR class %s.%s is not in %s: importing all of FunASR", table,
                         name, REGISTRY_FILE.name)
                return None
            needed.append((table, name, module))
    return needed


def _registry() -> dict[str, dict[str, str]] | None:
    """REGISTRY_FILE's tables, if it was made from the FunASR version installed."""
    import funasr  # the package object _package() made: version only

    data = _registry_file()
    if data is None or data.get("funasr") != getattr(funasr, "__version__", None):
        return None
    return data["tables"]


@functools.cache
def _registry_file() -> dict[str, Any] | None:
    """REGISTRY_FILE, read once per process (each model, VAD and online model asks)."""
    try:
        return json.loads(REGISTRY_FILE.read_text())
    except (OSError, ValueError):
        return None


def _class_names(config: Path) -> list[tuple[str, str]]:
    """(table, class name) for each top-level `<kind>: ClassName` of a FunASR config.yaml."""
    import yaml

    loaded = yaml.safe_load(config.read_text()) or {}
    return [(f"{key}_classes", value) for key, value in loaded.items()
            if isinstance(value, str) and not key.endswith("_conf")]


def registry_of_full_import() -> dict[str, Any]:
    """What REGISTRY_FILE holds: after `import funasr`, the module of each registered class."""
    import funasr
    from funasr.register import tables

    named = {table: getattr(tables, table) for table in dir(tables) if table.endswith("_classes")}
    return {"funasr": funasr.__version__, "tables": {
        table: {name: cls.__module__ for name, cls in sorted(classes.items())}
        for table, classes in sorted(named.items()) if isinstance(classes, dict)}}


if __name__ == "__main__":  # FunASR prints notices on stdout while it imports: to a file
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REGISTRY_FILE
    out.write_text(json.dumps(registry_of_full_import(), indent=1) + "\n")
