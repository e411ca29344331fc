"""The body of a client process (``vs_openbao.py --client``): connect to the system
named in the config, keep ``concurrency`` calls of one operation in flight through the
window, and send the driving process the result."""

from __future__ import annotations

from typing import Any

import _harness as h
import grpc

from .bao_calls import bao_call
from .pairs import CALL_TIMEOUT_S
from .vault_calls import vault_call


async def _drive(config: dict[str, Any], call: h.Call) -> None:
    """Keep ``concurrency`` calls in flight; report what completed in the window."""
    # Any exception of a call counts as an error (aiohttp's, a timeout), not only gRPC's.
    window = await h.drive(
        call, config["concurrency"], config["warmup"], config["seconds"], (Exception,)
    )
    h.emit(
        {
            "event": "result",
            "ok": len(window.latencies),
            "items": window.items,
            "errors": dict(window.errors),
            "p50_ms": h.percentile(window.latencies, 0.5) * 1000,
            "p99_ms": h.percentile(window.latencies, 0.99) * 1000,
            "cpu_s": window.cpu_s,
        }
    )


async def client(config: dict[str, Any]) -> None:
    if config["system"] in ("vault", "floor"):  # the floor speaks the vault's contract
        # A local subchannel pool per channel: each is its own TCP connection, so that
        # `serve --workers N` (SO_REUSEPORT spreads connections) gets traffic on all.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(config["address"], options=options)
            for _ in range(config["channels"])
        ]
        try:
            for channel in channels:
                await channel.channel_ready()
            await _drive(config, vault_call(config, channels))
        finally:
            for channel in channels:
                await channel.close(None)
    else:
        import aiohttp  # only here: main() says how to install it when it is missing

        connector = aiohttp.TCPConnector(limit=config["concurrency"])
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        async with aiohttp.ClientSession(
            base_url=config["address"], connector=connector, timeout=timeout
        ) as session:
            await _drive(config, bao_call(config, session))
