"""Which optional packages this environment can import, asked without importing them."""
from __future__ import annotations

import importlib.util


def package_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked import (sys.modules[name] = None) or a broken package
        return False
