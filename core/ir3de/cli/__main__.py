"""``python -m ir3de.cli``: the ``ir3de`` command."""

import sys

from ir3de.cli.main import main

sys.exit(main())
