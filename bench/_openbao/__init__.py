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
- :mod:`.dataset`: :func:`setup`, the same 180 credentials in both.
- :mod:`.vault_calls`, :mod:`.bao_calls`: one call of each operation, per system.
- :mod:`.client`: :func:`client`, the body of ``vs_openbao.py --client``.
- :mod:`.measure`: :func:`measure`, one client process's run seen from the driver.
- :mod:`.report`: :func:`print_report`, the header and tables printed at the end.

Apart from ``_harness``: nothing here is shared with the other benchmarks.
"""

from .bao_server import BaoProcess, bao_binary
from .client import client
from .dataset import setup
from .measure import Row, measure
from .pairs import BATCH_RPC, PAIRS, Pair
from .report import print_report
from .vault_calls import batch_available
from .vault_server import VaultProcess

__all__ = [
    "BATCH_RPC",
    "PAIRS",
    "BaoProcess",
    "Pair",
    "Row",
    "VaultProcess",
    "bao_binary",
    "batch_available",
    "client",
    "measure",
    "print_report",
    "setup",
]
