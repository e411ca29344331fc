"""OpenBao's side of the load: one KV v2 write or read over the client's aiohttp
session with the root token."""

from __future__ import annotations

import secrets
from typing import Any

import _harness as h

from .pairs import KV_MOUNT


def bao_call(config: dict[str, Any], session: Any) -> h.Call:
    """The call of ``config["op"]``: write (a new path each time) or read."""
    headers = {"X-Vault-Token": config["secret"]}
    paths: list[str] = [s["path"] for s in config["slots"]]
    prefix: str = config["prefix"]
    concurrency: int = config["concurrency"]

    async def write(worker: int, n: int) -> tuple[int, str]:
        url = f"/v1/{KV_MOUNT}/data/{prefix}/{worker}/{n}"
        body = {"data": {"value": secrets.token_urlsafe(32)}}
        async with session.post(url, json=body, headers=headers) as response:
            await response.read()
            return (1, "OK") if response.status == 200 else (0, f"HTTP_{response.status}")

    async def read(worker: int, n: int) -> tuple[int, str]:
        path = paths[(worker + n * concurrency) % len(paths)]
        async with session.get(f"/v1/{KV_MOUNT}/data/{path}", headers=headers) as response:
            await response.read()
            return (1, "OK") if response.status == 200 else (0, f"HTTP_{response.status}")

    calls: dict[str, h.Call] = {"write": write, "read": read}
    return calls[config["op"]]
