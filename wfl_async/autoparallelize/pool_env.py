"""wfl 0.3.5's local-pool variables that wfl_async does not implement, refused by name.

``WFL_MPIPOOL`` makes wfl's pool an MPI pool (mpipool) over ``mpirun``'s processes, and
``WFL_TORCH_N_GPUS`` gives each pool subprocess its own CUDA device. Neither is implemented
here; running with one set would silently run differently from wfl (a plain process pool,
every subprocess on the default GPU), so the pool refuses before it starts.
"""

from __future__ import annotations

import os

from ..errors import ConfigurationError

__all__ = ["check_pool_environment"]

_UNSUPPORTED = {
    "WFL_MPIPOOL": "MPI pools (wfl's mpipool support) are not implemented in wfl_async; unset WFL_MPIPOOL and "
                   "use WFL_NUM_PYTHON_SUBPROCESSES, or run the operation as queued jobs (RemoteInfo)",
    "WFL_TORCH_N_GPUS": "one CUDA device per pool subprocess (wfl's torch support) is not implemented in "
                        "wfl_async; unset WFL_TORCH_N_GPUS and choose the device in the calculator's "
                        "constructor arguments, or run one queued job per GPU",
}


def check_pool_environment() -> None:
    """:raises ConfigurationError: ``WFL_MPIPOOL`` or ``WFL_TORCH_N_GPUS`` is set (named, with what to do)."""
    for name, why in _UNSUPPORTED.items():
        if os.environ.get(name) is not None:
            raise ConfigurationError(f"{name}={os.environ[name]!r} is set: {why}")
