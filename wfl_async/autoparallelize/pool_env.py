"""wfl 0.3.5's local-pool variables: ``WFL_TORCH_N_GPUS`` honoured, ``WFL_MPIPOOL`` refused with why.

``WFL_TORCH_N_GPUS=N`` (as in wfl): each python subprocess of the pool works on its own CUDA
device, ``torch.cuda.set_device(i % N)`` for the i-th subprocess, and the subprocesses are
started by a fork server (CUDA does not survive a fork of a process that used it). A serial
run (no subprocesses) leaves the device alone, as wfl does. wfl hands a device to each task
from a queue; here each subprocess keeps one for its life, which spreads the work over the
devices the same way (at most ceil(subprocesses / N) tasks per device at once).

``WFL_MPIPOOL`` makes wfl's pool an MPI pool over the ranks of ``mpirun``: the ranks other
than the first wait for tasks. wfl_async has no MPI pool, so under ``mpirun`` every rank would
run the whole script, doing all the work once per rank; the pool refuses before it starts.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from typing import Any

from ..errors import ConfigurationError

__all__ = ["GPUS_ENV_VAR", "check_pool_environment", "pool_start"]

GPUS_ENV_VAR = "WFL_TORCH_N_GPUS"
MPIPOOL_ENV_VAR = "WFL_MPIPOOL"


def check_pool_environment() -> int | None:
    """The number of GPUs to spread the subprocesses over (``WFL_TORCH_N_GPUS``), None if unset.

    :raises ConfigurationError: ``WFL_MPIPOOL`` is set, or ``WFL_TORCH_N_GPUS`` is not a positive
        integer or torch cannot be imported (each named, with what to do)
    """
    if os.environ.get(MPIPOOL_ENV_VAR) is not None:
        raise ConfigurationError(
            f"{MPIPOOL_ENV_VAR}={os.environ[MPIPOOL_ENV_VAR]!r} is set, but wfl_async has no MPI pool (wfl's "
            "mpipool support): under mpirun every rank would run the whole script and do all the work again. "
            f"Fix: unset {MPIPOOL_ENV_VAR} and run one process with WFL_NUM_PYTHON_SUBPROCESSES set to the cores "
            "of the node, or spread the work over nodes as queued jobs (RemoteInfo, num_inputs_per_queued_job)")
    value = os.environ.get(GPUS_ENV_VAR)
    if value is None:
        return None
    try:
        gpus = int(value)
    except ValueError:
        gpus = 0
    if gpus < 1:
        raise ConfigurationError(f"{GPUS_ENV_VAR}={value!r} must be the number of GPUs (a positive integer), "
                                 f"e.g. {GPUS_ENV_VAR}=2; unset it to leave the device to the calculator")
    if importlib.util.find_spec("torch") is None:
        raise ConfigurationError(f"{GPUS_ENV_VAR}={value!r} is set but torch cannot be imported here; install "
                                 f"torch in this environment, or unset {GPUS_ENV_VAR}")
    return gpus


class _OnItsOwnDevice:
    """Pool initializer: put this subprocess on the next CUDA device (round robin), then the user's initializer."""

    def __init__(self, counter: Any, gpus: int, initializer: Callable[..., Any] | None,
                 initargs: Sequence[Any]) -> None:
        self.counter = counter
        self.gpus = gpus
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def __call__(self) -> None:
        import torch

        with self.counter.get_lock():
            index = self.counter.value
            self.counter.value += 1
        torch.cuda.set_device(index % self.gpus)
        if self.initializer is not None:
            self.initializer(*self.initargs)


def pool_start(initializer: tuple[Callable[..., Any] | None, Any]) -> tuple[BaseContext, dict[str, Any]]:
    """The multiprocessing context and the ``Pool`` keywords for a pool honouring the variables above.

    :raises ConfigurationError: as :func:`check_pool_environment`
    """
    gpus = check_pool_environment()
    function, args = initializer
    if gpus is None:
        init = {"initializer": function, "initargs": tuple(args)} if function is not None else {}
        return multiprocessing.get_context(), init
    context = multiprocessing.get_context("forkserver")
    return context, {"initializer": _OnItsOwnDevice(context.Value("i", 0), gpus, function, args)}
