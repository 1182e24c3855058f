"""``wfl.generate_configs.minim.run``: the older name of :func:`wfl_async.generate.optimize.optimize`.

The seed's example script (``from wfl.generate_configs.minim import run``, then
``run(ci, co, calculator=(Vasp, [], vasp_kwargs), pressure=0.0)``) works with only the import
changed. Same arguments, defaults and results as ``optimize``; for ``WFL_EXPYRE_INFO`` matching
the call is ``generate_configs/minim.py::run`` (the key of that example), not ``optimize``.
"""

from __future__ import annotations

import functools
from typing import Any

from ..autoparallelize.operation import AutoparaOperation
from ..generate import optimize as _optimize

__all__ = ["run"]


# defined here (its file is this module's, for stack matching) with optimize's signature
# (``__wrapped__``), so autoparallelize sees its ``_autopara_per_item_info`` argument
@functools.wraps(_optimize._run_autopara_wrappable, assigned=("__doc__",), updated=())
def _run_autopara_wrappable(*args: Any, **kwargs: Any) -> Any:
    return _optimize._run_autopara_wrappable(*args, **kwargs)


run = AutoparaOperation(_run_autopara_wrappable, name="run", module=__name__,
                        default_autopara_info={"num_inputs_per_python_subprocess": 10},
                        doc=_optimize.optimize.__doc__)
