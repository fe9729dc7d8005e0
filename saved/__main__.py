"""``python -m saved`` (and ``torchrun -m saved``): the ``saved`` command."""

import sys

from .cli import main

sys.exit(main())
