"""The TypeScript client README's runnable examples: the marked code blocks, and the
environment that runs them against a vault."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.vault import Vault

ROOT = Path(__file__).resolve().parents[2]

TS_DIR = ROOT / "clients" / "typescript"

README = TS_DIR / "README.md"

MARKED_BLOCK = re.compile(
    r"^<!-- readme-example(?: (?P<example>[a-z][a-z-]*))?: (?P<marker>[^>]*?) -->\n"
    r"(?:```(?P<lang>[a-z]+)\n(?P<body>.*?)^```$)?",
    flags=re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    """A marked block of the README: a shell block to run, a file to save, or the
    output the example prints."""

    kind: str  # "run", "file" or "output"
    body: str
    file: str | None = None


def readme_blocks(text: str, example: str | None = None) -> list[Block]:
    """The marked blocks of one example (None: the unnamed one), in order; a marker not
    followed by a fenced block fails."""
    blocks = []
    for match in MARKED_BLOCK.finditer(text):
        if match["example"] != example:
            continue
        marker = match["marker"]
        assert match["body"] is not None, (
            f"README marker <!-- readme-example: {marker} --> is not directly followed "
            "by a fenced code block"
        )
        if marker == "run":
            assert match["lang"] == "sh", f"a run block must be ```sh, not ```{match['lang']}"
            blocks.append(Block("run", match["body"]))
        elif marker == "output":
            blocks.append(Block("output", match["body"]))
        elif marker.startswith("file "):
            name = marker.removeprefix("file ").strip()
            blocks.append(Block("file", match["body"], name))
        else:
            raise AssertionError(f"unknown README marker <!-- readme-example: {marker} -->")
    return blocks


def example_env(vault: Vault, data_dir: Path) -> dict[str, str]:
    """A newcomer's shell: `singura-vault` on PATH, the admin key in its data dir, no
    SINGURA_API_KEY of the test run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SINGURA_", "DATABASE_"))}
    env.update(
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        SINGURA_DATA_DIR=str(data_dir),
        SINGURA_ADDRESS=vault.address,
        npm_config_prefer_offline="true",
        npm_config_audit="false",
        npm_config_fund="false",
        npm_config_update_notifier="false",
        # As ensure_node_modules: a test run executes no package's install script.
        npm_config_ignore_scripts="true",
    )
    return env
