"""RemoteInfo: what a remote (queued-job) execution of an autoparallelized call needs."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from ..jobs.options import JobOptions, WithOptions
from ..placement.choices import parse_sys_names

__all__ = ["RemoteInfo"]

_FIELDS = ("sys_name", "job_name", "resources", "num_inputs_per_queued_job", "pre_cmds", "post_cmds",
           "env_vars", "input_files", "output_files", "header_extra", "exact_fit", "partial_node",
           "timeout", "check_interval", "ignore_failed_jobs", "resubmit_killed_jobs", "hash_ignore", "code_version",
           "pack", "submit", "escalate")
_REQUIRED = ("sys_name", "job_name", "resources")



class RemoteInfo(WithOptions):
    """Where and how to run an autoparallelized call as queued jobs (wfl's fields and defaults).

    :param sys_name: name of the system (in ExPyRe's ``config.json``) to run on; not in wfl: a list of
        names (preference order) or a dict of weights spreads the chunks over several systems, placed by
        each one's measured queue wait and moved off a slow one (docs/multi_system.md)
    :param job_name: name for the jobs (unique within this project); chunk i is
        ``<job_name>_chunk_<i>``
    :param resources: ``expyre.resources.Resources`` or the kwargs of its constructor
    :param num_inputs_per_queued_job: inputs per job; if negative, ``-n *
        num_inputs_per_python_subprocess`` (default -100)
    :param pre_cmds: shell commands run before the job's python
    :param post_cmds: shell commands run after it
    :param env_vars: ``NAME=value`` strings set in the job
    :param input_files: files staged into each job directory
    :param output_files: files staged back from each job directory
    :param header_extra: extra queueing-system header lines
    :param exact_fit: require an exact fit to the node size (default True)
    :param partial_node: allow jobs smaller than a node, overrides exact_fit (default False)
    :param timeout: seconds to wait for results before giving up (default 3600)
    :param check_interval: seconds between status checks (default 30)
    :param ignore_failed_jobs: write the inputs of failed chunks, marked
        ``EXPYRE_REMOTE_JOB_FAILED``, instead of raising (default False)
    :param resubmit_killed_jobs: resubmit jobs that died without an exit status (default False)
    :param hash_ignore: argument names left out of the job key (default [])
    :param code_version: not in wfl (which never notices code changes): ``True`` adds the source of
        the operation's module to the job key, a string adds that explicit version (default None)
    :param pack: not in wfl: run the chunks inside a few worker jobs instead of one job each,
        ``{"workers": 8}``, ``"auto"`` (pack when the chunks are expected to be short) or ``False``;
        None (default) takes the system's ``"pack"`` setting of config.json (docs/packing.md)
    :param submit: not in wfl: ``"array"`` submits the chunks as job arrays (chunks with the same
        resources, at most the system's ``max_array_size`` per scheduler call), ``"loop"`` one
        submission per chunk; default None: the system's ``"submit"`` (itself ``"loop"`` by
        default). Not part of the job key: a rerun in the other mode re-attaches
    :param escalate: not in wfl: a chunk killed at its time limit is split in two (one configuration:
        rerun with twice the time), one killed above its memory is rerun with twice the memory, up to
        the partition's limits; False: such a chunk died, as in wfl (default True; docs/escalation.md)
    :raises ConfigurationError: unknown field (named, with the valid ones listed)
    """

    def __init__(self, sys_name: str | Sequence[str] | Mapping[str, float], job_name: str, resources: Any, num_inputs_per_queued_job: int = -100,
                 pre_cmds: list[str] | None = None, post_cmds: list[str] | None = None,
                 env_vars: list[str] | None = None, input_files: list[str] | None = None,
                 output_files: list[str] | None = None, header_extra: list[str] | None = None,
                 exact_fit: bool = True, partial_node: bool = False, timeout: float = 3600,
                 check_interval: float = 30, ignore_failed_jobs: bool = False,
                 resubmit_killed_jobs: bool = False, hash_ignore: list[str] | None = None,
                 code_version: bool | str | None = None, pack: Any = None, submit: str | None = None,
                 escalate: bool = True, **unknown: Any) -> None:
        if unknown:
            raise ConfigurationError(f"RemoteInfo got unknown field(s) {', '.join(map(repr, sorted(unknown)))}; "
                                     f"valid fields are {', '.join(_FIELDS)}")
        parse_sys_names(sys_name)  # a malformed list or weight fails here, before anything is prepared
        self.sys_name = copy.deepcopy(sys_name)
        self.job_name = job_name
        self.num_inputs_per_queued_job = num_inputs_per_queued_job
        self.ignore_failed_jobs = ignore_failed_jobs
        self.resources = copy.deepcopy(resources)
        """As given (an ExPyRe ``Resources`` or a dict): turned into the job's resources per call."""
        self.options = JobOptions(
            pre_cmds=pre_cmds or (), post_cmds=post_cmds or (), env_vars=env_vars or (),
            input_files=input_files or (), output_files=output_files or (), header_extra=header_extra or (),
            exact_fit=exact_fit, partial_node=partial_node, timeout=timeout, check_interval=check_interval,
            resubmit_killed_jobs=resubmit_killed_jobs, hash_ignore=hash_ignore or (), code_version=code_version,
            pack=pack, submit=submit, escalate=escalate)
        """The job options every chunk's job gets (one description shared with RemoteJob)."""

    fields = _FIELDS
    _option_names = frozenset(JobOptions.names()) - {"resources"}
    """Its ``resources`` stay as given (an ExPyRe ``Resources`` or a dict), not a job option."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> RemoteInfo:
        """Build from a dict (e.g. a ``WFL_EXPYRE_INFO`` value), checking its keys first.

        :param where: where the dict came from, for error messages
        :raises ConfigurationError: not a dict, unknown or missing fields
        """
        src = f" in {where}" if where else ""
        if not isinstance(values, Mapping):
            raise ConfigurationError(f"RemoteInfo fields{src} must be a dict, got {type(values).__name__}: {values!r}")
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(f"RemoteInfo{src} got unknown field(s) {', '.join(map(repr, unknown))}; "
                                     f"valid fields are {', '.join(_FIELDS)}")
        missing = [f for f in _REQUIRED if f not in values]
        if missing:
            raise ConfigurationError(f"RemoteInfo{src} is missing required field(s) {', '.join(missing)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """All fields, as accepted by :meth:`from_dict`."""
        return {f: copy.deepcopy(getattr(self, f)) for f in _FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteInfo) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RemoteInfo({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __str__(self) -> str:
        return (f"{self.sys_name} {self.job_name} {self.resources} {self.num_inputs_per_queued_job} "
                f"{self.exact_fit} {self.partial_node} {self.timeout} {self.check_interval}")
