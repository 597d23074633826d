"""``python -m textnorm_t2i.cli``: the same as the ``textnorm`` command."""

import sys

from textnorm_t2i.cli import main

sys.exit(main())
