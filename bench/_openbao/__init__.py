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
- :mod:`.floor_server`, :mod:`.floor_process`: ``--floor``'s bare server with the
  vault's contract (the least grpc.aio + asyncpg + PostgreSQL can do per call), and
  :class:`FloorProcess`, which runs it as a subprocess.
- :mod:`.vault_calls`, :mod:`.bao_calls`: one call of each operation, per system.
- :mod:`.client`: :func:`client`, the body of ``vs_openbao.py --client``.
- :mod:`.measure`: :func:`measure`, one client process's run seen from the driver.
- :mod:`.report`: :func:`print_report`, the header and tables printed at the end.

Apart from ``_harness``: nothing here is shared with the other benchmarks.
"""

from .bao_server import BaoProcess, bao_binary
from .client import client
from .dataset import setup, setup_floor
from .floor_process import FloorProcess
from .floor_server import floor_server_main
from .measure import Row, Sample, measure
from .pairs import BATCH_RPC, PAIRS, Pair
from .report import print_report
from .vault_calls import batch_available
from .vault_server import VaultProcess

__all__ = [
    "BATCH_RPC",
    "PAIRS",
    "BaoProcess",
    "FloorProcess",
    "Pair",
    "Row",
    "Sample",
    "VaultProcess",
    "bao_binary",
    "batch_available",
    "client",
    "floor_server_main",
    "measure",
    "print_report",
    "setup",
    "setup_floor",
]
