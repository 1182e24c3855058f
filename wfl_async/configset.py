"""Collections of atomic configurations to read (ConfigSet) and to write (OutputSpec).

Drop-in for ``wfl.configset``: files written by one package are read by the other, with
the same nesting (``Atoms.info["_ConfigSet_loc"]``).
"""

from ._configset._configset import ConfigSet
from ._configset._outputspec import OutputSpec

__all__ = ["ConfigSet", "OutputSpec"]
