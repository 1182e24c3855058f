"""Import the parts of expyre-wfl we reuse, without its import-time side effects.

``import expyre`` runs ``expyre/__init__.py``, which imports ``expyre.config``, which on
import reads every ``config.json`` it can find, builds ExPyRe ``System`` objects from them
(a ``TypeError`` on any key ExPyRe does not know, such as our ``ssh_config``) and opens its
own sqlite ``jobs.db``. We only want pure helpers: ``units`` (time and memory parsing),
``resources.Resources`` (partition selection) and ``config.update_dict_leaves`` (the
deeper-overrides-shallower merge). So the expyre directory is mounted under a private
package name whose ``__init__`` is never executed, and ``config`` is imported with
``EXPYRE_ROOT`` pointing at an empty directory, which makes its ``init()`` a no-op.
The user's own ``import expyre`` is unaffected.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from types import ModuleType

from ..errors import ConfigurationError

__all__ = ["expyre_module"]

_PRIVATE = "_wfl_async_expyre"


def expyre_module(name: str) -> ModuleType:
    """The expyre submodule ``name`` (``units``, ``resources``, ``config``), imported privately."""
    if _PRIVATE not in sys.modules:
        spec = importlib.util.find_spec("expyre")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigurationError("the expyre-wfl package is missing; install it with: pip install expyre-wfl")
        package_spec = importlib.machinery.ModuleSpec(_PRIVATE, None, is_package=True)
        package_spec.submodule_search_locations = list(spec.submodule_search_locations)
        sys.modules[_PRIVATE] = importlib.util.module_from_spec(package_spec)
    full = f"{_PRIVATE}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if name != "config":
        return importlib.import_module(full)
    saved = os.environ.get("EXPYRE_ROOT")
    with tempfile.TemporaryDirectory() as empty:
        os.environ["EXPYRE_ROOT"] = empty
        try:
            return importlib.import_module(full)
        finally:
            if saved is None:
                del os.environ["EXPYRE_ROOT"]
            else:
                os.environ["EXPYRE_ROOT"] = saved
