"""Where jobs live remotely: ``<rundir>/<project>/<job dir>``, never naming the submitting host.

ExPyRe appended ``$HOSTNAME`` to the remote run directory, so a rerun from another login
node could not find its jobs. Here the project part is derived from the local stage
directory's path only (a shared filesystem gives every login node the same path).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["job_dir_name", "project_key", "safe_name"]


def safe_name(name: str, limit: int = 40) -> str:
    """``name`` reduced to characters every scheduler and shell accept unquoted."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "job"
    return cleaned[:limit]


def project_key(local_stage_dir: Path) -> str:
    """Readable, collision-free name for this project's jobs on a remote system."""
    resolved = str(local_stage_dir.expanduser().resolve())
    tag = hashlib.sha256(resolved.encode()).hexdigest()[:10]
    parent = local_stage_dir.resolve().parent.name if local_stage_dir.name in ("_expyre", ".expyre") \
        else local_stage_dir.name
    return f"{safe_name(parent, 30)}-{tag}"


def job_dir_name(job_name: str, key: str) -> str:
    """Directory of one job: its (sanitised) name and the start of its content hash."""
    return f"{safe_name(job_name)}-{key[:20]}"
