"""Put the repository root on ``sys.path`` for a tool run as a script.

``python tools/X.py`` (from the root or from any other directory) puts ``tools/`` on ``sys.path``, not the
root, so the project's packages (``model``, ``data_utils``, ``training``, ``tasks``, ``tools``) would not
import. Each tool does, before its project imports::

    if __package__ in (None, ""):  # run as a script, not as tools.X
        import _repo_root  # noqa: F401

Imported as ``tools.X`` (tests, ``python -m tools.X``) the root is already importable and this module is
never loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
