"""The rules of the test suite's own layout, held by the build (STYLE.md: "Tests name
behaviour"): every test says in a docstring what behaviour it asserts; what tests share
lives in tests/support/ (builders) or a conftest.py (fixtures), never in another test
module; and a unit test cannot reach PostgreSQL, whose fixtures live under integration/."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def test_the_suite_is_found() -> None:
    """The walk below sees the unit and the integration tests (an empty walk would pass
    every other check here)."""
    folders = {path.parent.name for path in _test_modules()}
    assert {"unit", "integration"} <= folders


def test_every_test_function_has_a_docstring() -> None:
    """A test function (module level or in a class) without a docstring fails the build,
    named by file, line and name."""
    missing = [
        f"{path.relative_to(TESTS.parent)}:{node.lineno} {node.name}"
        for path in _test_modules()
        for node in ast.walk(_parsed(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test")
        and not ast.get_docstring(node)
    ]
    assert not missing, "say in one sentence what behaviour each asserts:\n" + "\n".join(missing)


def test_no_test_module_imports_another_test_module() -> None:
    """Test modules and support modules import tests.support (or nothing of tests), never a
    test module or a conftest: what two files share is moved to support or a conftest."""
    offending = []
    for path in [*_test_modules(), *sorted((TESTS / "support").glob("*.py"))]:
        for module in _imported_modules(_parsed(path)):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offending.append(f"{path.relative_to(TESTS.parent)} imports {module}")
    assert not offending, "\n".join(offending)


def test_support_modules_define_no_fixtures() -> None:
    """A fixture lives in a conftest.py, where pytest finds it, not in a support module that
    a test would have to import for its side effect."""
    fixtures = [
        f"{path.relative_to(TESTS.parent)}:{node.lineno} {node.name}"
        for path in sorted((TESTS / "support").glob("*.py"))
        for node in ast.walk(_parsed(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_is_fixture(d) for d in node.decorator_list)
    ]
    assert not fixtures, "\n".join(fixtures)


def test_the_postgresql_fixtures_are_out_of_reach_of_unit_tests() -> None:
    """The session's PostgreSQL is defined in tests/integration/conftest.py only, so a unit
    test that asked for it would fail to find it instead of starting a server."""
    defining = sorted(
        str(path.relative_to(TESTS.parent))
        for path in TESTS.rglob("conftest.py")
        for node in _parsed(path).body
        if isinstance(node, ast.FunctionDef) and node.name == "postgres"
    )
    assert defining == ["tests/integration/conftest.py"]
