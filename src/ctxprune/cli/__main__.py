"""`python -m ctxprune.cli` (and `torchrun -m ctxprune.cli`): the same as the `ctxprune` command."""

import sys

from ctxprune.cli import main

sys.exit(main())
