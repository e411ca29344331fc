"""Shared plumbing for the benchmarks in this directory (not a benchmark itself).

The benchmarks are run as ``python bench/<name>.py``, which puts this directory
first on ``sys.path``; they ``import _harness as h`` and use ``h.<name>``. This
package re-exports those names from modules that each do one job:

- :mod:`.loop`: :func:`run` a coroutine (on uvloop when installed), SIGTERM included.
- :mod:`.postgres`: :func:`embedded_postgres`, a throwaway PostgreSQL in a temporary
  directory, stopped and deleted on exit, Ctrl-C or SIGTERM included.
- :mod:`.replication`: :func:`hot_standby`, a streaming standby of that server, which
  :meth:`Standby.use` stops or makes asynchronous or synchronous.
- :mod:`.vault`: :func:`running_vault`, the vault served on ``127.0.0.1:<random port>``
  with a fresh admin key, and helpers that talk to it.
- :mod:`.tenants`: :func:`create_organization` and :func:`create_connection`, the
  setups' organizations and connections.
- :mod:`.meters`: memory and CPU meters read from ``/proc`` (Linux only); a
  postmaster's CPU includes the backends that have exited (its cutime/cstime).
- :mod:`.load`: :func:`drive`, the client side of a measurement: calls kept in flight
  through a warm-up and a measured window, and what completed inside it.
- :mod:`.report`: percentiles, Markdown tables and the machine summary.
- :mod:`.clients`: the line-delimited JSON protocol for load-generating *client
  processes* (``<script> --client``), so the client's CPU and memory are not the
  server's.

A package rather than a ``_harness.py`` facade with sibling modules: the modules
live under one name instead of spreading ``_harness_*.py`` files among the
benchmarks, and the benchmarks' imports stay as they were.
"""

# First: importing singura_vault sets GRPC_ENABLE_FORK_SUPPORT=false, which grpc reads
# when it is imported (by .load, .tenants and .vault); with fork support on, starting a
# client process while gRPC threads are busy logs fork warnings.
import singura_vault  # noqa: F401 - imported for that side effect

from .clients import ClientProcess, client_main, emit, receive_line
from .load import Call, Window, drive
from .loop import loop_name, run
from .meters import (
    MIB,
    PeakRss,
    cpu_seconds,
    machine_busy_seconds,
    postmaster_cpu_seconds,
    process_tree_cpu_seconds,
    processes_cpu_seconds,
    rss_bytes,
    status_kib,
)
from .postgres import Postgres, embedded_postgres, postgres_version
from .replication import Standby, StandbyMode, hot_standby
from .report import cell, machine_summary, percentile, table
from .tenants import create_connection, create_organization
from .vault import Vault, auth, chain_pending_audit, new_key_text, quiet_server_logs, running_vault

__all__ = [
    "MIB",
    "Call",
    "ClientProcess",
    "PeakRss",
    "Postgres",
    "Standby",
    "StandbyMode",
    "Vault",
    "Window",
    "auth",
    "cell",
    "chain_pending_audit",
    "client_main",
    "cpu_seconds",
    "create_connection",
    "create_organization",
    "drive",
    "embedded_postgres",
    "emit",
    "hot_standby",
    "loop_name",
    "machine_busy_seconds",
    "machine_summary",
    "new_key_text",
    "percentile",
    "postgres_version",
    "postmaster_cpu_seconds",
    "process_tree_cpu_seconds",
    "processes_cpu_seconds",
    "quiet_server_logs",
    "receive_line",
    "rss_bytes",
    "run",
    "running_vault",
    "status_kib",
    "table",
]
