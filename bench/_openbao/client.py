"""The body of a client process (``vs_openbao.py --client``): connect to the system
named in the config and load it with one operation, either closed-loop (keep
``concurrency`` calls in flight through the window) or open-loop (``"rate"`` in the
config: calls started on a fixed schedule, :mod:`.open_loop`), and send the driving
process the result."""

from __future__ import annotations

from typing import Any

import _harness as h
import grpc

from .bao_calls import bao_call
from .echo_server import METHOD, PAYLOAD_BYTES
from .open_loop import drive_open
from .pairs import CALL_TIMEOUT_S
from .vault_calls import vault_call


async def _drive(config: dict[str, Any], call: h.Call) -> None:
    """Load with ``call``; report what completed (or was due) in the window."""
    # Any exception of a call counts as an error (aiohttp's, a timeout), not only gRPC's.
    if config.get("rate"):
        h.emit(
            await drive_open(
                call,
                config["rate"],
                config["warmup"],
                config["seconds"],
                config["concurrency"],
                (Exception,),
            )
        )
        return
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


def echo_call(config: dict[str, Any], channels: list[grpc.aio.Channel]) -> h.Call:
    """A call of the bare echo server: bytes in, the same bytes out, with the vault
    calls' authorization metadata (the echo ignores it) so the wire carries as much."""
    # No serializers: bytes go out and come back as they are.
    methods = [c.unary_unary(METHOD, None, None) for c in channels]
    metadata = h.auth(config["secret"])
    payload = bytes(PAYLOAD_BYTES)

    async def echo(worker: int, n: int) -> tuple[int, str]:
        await methods[worker % len(methods)](payload, metadata=metadata, timeout=CALL_TIMEOUT_S)
        return 1, "OK"

    return echo


async def client(config: dict[str, Any]) -> None:
    if config["system"] in ("vault", "floor", "echo"):  # all three over grpc.aio
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
            # The floor speaks the vault's contract.
            make = echo_call if config["system"] == "echo" else vault_call
            await _drive(config, make(config, channels))
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
