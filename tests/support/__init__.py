"""What the tests share: builders, fakes of third parties, running vaults and servers.

One job per module; no test module imports another test module, and fixtures
shared across files live in conftest.py files, not here.
"""

from __future__ import annotations
