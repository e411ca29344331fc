"""``python -m singura_vault`` is the same as the ``singura-vault`` command."""

import sys

from singura_vault.cli import main

sys.exit(main())
