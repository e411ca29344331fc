"""Every module of the package has a place in the layers contract (pyproject.toml), so
that import-linter checks what it may import: a module left out would be unchecked."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import singura_vault

ROOT = Path(__file__).resolve().parents[2]


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = (
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    names: set[str] = set()
    for layer in layers:
        for sibling in layer.replace(":", "|").split("|"):
            names.add(sibling.strip())
    return names


def test_every_module_is_in_a_layer() -> None:
    """Every top-level module of the package is named in the layers contract, and the contract names
    no module that does not exist."""
    top_level = {f"singura_vault.{m.name}" for m in pkgutil.iter_modules(singura_vault.__path__)}
    assert top_level, "no modules found"
    missing = sorted(top_level - _layered())
    assert not missing, f"add these to the layers contract in pyproject.toml: {missing}"
    stale = sorted(_layered() - top_level)
    assert not stale, f"the layers contract names modules that do not exist: {stale}"
