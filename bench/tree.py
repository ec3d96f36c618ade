"""The working tree's `cellblock`, as a benchmark starts it: this interpreter
running the checkout's CLI (with PYTHONPATH at the checkout), never an older
installed copy."""

from __future__ import annotations

import sys

CELLBLOCK = [sys.executable, "-c", "import sys; from cellblock.cli import main; sys.exit(main())"]
