"""docs/oauth.md's walk-throughs run as a reader would: the doc's shell blocks with
its placeholders filled, bash run without blocking, the provider's printed values and
grpcurl's JSON answers read back."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

from tests.support.oauth_provider import PRINTED_NAMES

# The doc's address; the tests' vault listens elsewhere.
DOC_ADDRESS = "localhost:50051"

# What the doc tells the reader to copy from an earlier answer.
ORG_PLACEHOLDER = "<organization id>"

CONN_PLACEHOLDER = "<connection id>"

PROVIDER_START_S = 30

BLOCK_LIMIT_S = 60


def as_read(block: str, org: str, conn: str, address: str) -> str:
    """The block as the reader runs it: the ids they were told to copy filled in, and
    the vault's address."""
    return (
        block.replace(ORG_PLACEHOLDER, org)
        .replace(CONN_PLACEHOLDER, conn)
        .replace(DOC_ADDRESS, address)
    )


def printed_values(process: subprocess.Popen[str]) -> dict[str, str]:
    assert process.stdout is not None
    values: dict[str, str] = {}
    for line in process.stdout:
        name, equals, value = line.rstrip("\n").partition("=")
        if equals and not name.startswith("#"):
            values[name] = value
        if set(values) >= set(PRINTED_NAMES):
            return values
    assert process.stderr is not None
    raise AssertionError(
        f"the provider stopped before printing its values: {process.stderr.read()}"
    )


async def bash(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euc",
        script,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), BLOCK_LIMIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"a walk-through block did not finish within {BLOCK_LIMIT_S} s:\n{script}")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def grpcurl_answers(stdout: str) -> list[dict[str, Any]]:
    """grpcurl's answers: JSON documents one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := skip_space(stdout, at)) < len(stdout):
        document, at = decoder.raw_decode(stdout, at)
        found.append(document)
    return found


def skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
