"""``python -m bench.peers``: see ``bench/peers/__init__.py`` and docs/peers.md."""

import sys

from bench.peers.cli import main

sys.exit(main())
