"""The parts of ``vs_openbao.py``, the benchmark of the vault side by side with
OpenBao (not a benchmark itself).

Imported as ``_harness`` is (``bench/`` is first on ``sys.path`` when a benchmark runs
as ``python bench/<name>.py``), and built on it: ``import _openbao as ob``. This
package re-exports the names the script uses from modules that each do one job:

- :mod:`.pairs`: what is compared: the data set's shape and the rows (:data:`PAIRS`).
- :mod:`.processes`: free ports, waiting for a server, stopping one.
- :mod:`.vault_server`: :class:`VaultProcess`, ``python -m singura_vault serve``.
- :mod:`.bao_server`: :class:`BaoProcess`, ``bao server`` with raft storage, and
  :func:`bao_binary`, which ``bao`` to run.
- :mod:`.dataset`: :func:`setup`, the same 180 credentials in both (and in the floor).
- :mod:`.floor_server`: ``--floor``'s bare server with the vault's contract (the least
  grpc.aio + asyncpg + PostgreSQL can do per call).
- :mod:`.echo_server`: the bare grpc.aio echo (the least one unary call costs).
- :mod:`.script_server`: :class:`ScriptServer`, either of those two as a subprocess.
- :mod:`.pinning`: ``--pin``, the servers on one CPU set and the clients on the other.
- :mod:`.vault_calls`, :mod:`.bao_calls`: one call of each operation, per system.
- :mod:`.client`: :func:`client`, the body of ``vs_openbao.py --client``; the echo's call.
- :mod:`.open_loop`: calls started on a fixed schedule (latency at an offered rate).
- :mod:`.measure`: :func:`measure`, one client process's run seen from the driver.
- :mod:`.batch_metrics`: the vault's ``singura_db_batch_size`` histogram, scraped and
  diffed per window.
- :mod:`.wait_events`: :class:`WaitSampler`, the vault's PostgreSQL's wait events per
  window (``pg_stat_activity`` sampled).
- :mod:`.targets`: issue #26's targets, met or missed.
- :mod:`.report`, :mod:`.limits_report`: :func:`print_report`, the header and tables
  printed at the end.

Apart from ``_harness``: nothing here is shared with the other benchmarks.
"""

from . import batch_metrics, pinning
from .bao_server import BaoProcess, bao_binary
from .client import client
from .dataset import setup, setup_floor
from .echo_server import echo_server_main
from .floor_server import floor_server_main
from .measure import Probes, Row, Sample, measure
from .pairs import BATCH_RPC, PAIRS, Pair
from .report import Setup, print_report
from .script_server import ScriptServer, echo_process, floor_process
from .vault_calls import batch_available
from .vault_server import VaultProcess
from .wait_events import WaitSampler

__all__ = [
    "BATCH_RPC",
    "PAIRS",
    "BaoProcess",
    "Pair",
    "Probes",
    "Row",
    "Sample",
    "ScriptServer",
    "Setup",
    "VaultProcess",
    "WaitSampler",
    "bao_binary",
    "batch_available",
    "batch_metrics",
    "client",
    "echo_process",
    "echo_server_main",
    "floor_process",
    "floor_server_main",
    "measure",
    "pinning",
    "print_report",
    "setup",
    "setup_floor",
]
