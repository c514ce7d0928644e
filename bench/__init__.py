"""lbtui's benchmarks: ``python -m bench`` runs the side-by-side suite (see bench/README.md).

The scripts here also run on their own (``python bench/throughput.py``) and import their
shared helpers as top-level modules (``from common import …``); this puts ``bench/`` on the
import path so that they do the same when imported as ``bench.*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
