"""The garbage collector in a long-running vault process: what startup built is frozen
out of the full collections.

A vault process imports grpc, protobuf, asyncpg, OpenTelemetry, Starlette's and its own
modules and builds its object graph: tens of thousands of objects that live as long as
the process. CPython's cyclic collector walks every tracked object on each full
(generation 2) collection, and every call in flight waits while it does. Under load a
full collection came every ~2 s and took 45-90 ms (bench/rpc_throughput.py on
2 cores): most of an RPC's tail latency at half of the vault's peak
(docs/scaling.md). ``gc.freeze()`` once startup is over moves those objects to a
permanent generation that the collector never walks; full collections then take a
millisecond or two.

Nothing unreachable is frozen: startup's garbage is collected first. What calls
allocate afterwards is collected exactly as before, so memory does not grow from this.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what startup left unreachable, then freeze everything still alive out of
    the collector's walks; the number of objects frozen (for the start-up log)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
