"""``python -m pbft``: the same as the ``pbft`` command."""

import sys

from pbft.cli import main

sys.exit(main())
