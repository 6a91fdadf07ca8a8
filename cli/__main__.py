"""``python -m cli``: the ``aiops`` command without the installed console script."""

import sys

from cli.main import main

sys.exit(main())
