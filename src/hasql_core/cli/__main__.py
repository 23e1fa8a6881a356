"""``python -m hasql_core.cli``: the same as the ``hasql`` command."""

import sys

from . import main

sys.exit(main())
