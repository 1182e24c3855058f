"""The wfl + ExPyRe side of the benchmark, run in its own process.

``python -I .../_expyre_child.py '<json>'`` with ``EXPYRE_ROOT`` pointing at
the benchmark's private root. ``import expyre`` reads that root's ``config.json`` and
opens its jobs database on import, which is why this runs in a subprocess. It drives
ExPyRe exactly as wfl's ``autoparallelize`` does for remote jobs: one ``ExPyRe`` per call,
``start()`` every job, then ``get_results()`` on each in order, then ``mark_processed()``
unless ``WFL_EXPYRE_NO_MARK_PROCESSED`` is set. Prints one JSON line with its timings.

Run as a script, not as ``-m benchmarks.wfl_async_bench...``: it imports nothing of wfl_async, so
its peak memory is ExPyRe's own. The function comes by name (``module:attribute``).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time


def _peak_rss() -> int:
    """VmHWM: unlike ru_maxrss, which Linux carries over from the parent across exec."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0])
    t_import = time.monotonic()
    from expyre import ExPyRe, config  # imported here: it reads EXPYRE_ROOT on import

    module, _, attribute = opts["function"].partition(":")
    function = getattr(importlib.import_module(module), attribute)
    base = int(opts["base"])

    # the clock starts once configuration is loaded, as for wfl_async (after its session opens)
    t0 = time.monotonic()
    t_import = t0 - t_import
    n_jobs = int(opts["jobs"])
    xprs = [ExPyRe(f"bench{i}", function=function, args=[i, base]) for i in range(n_jobs)]
    for xpr in xprs:
        xpr.start(resources=opts["resources"], system_name=opts["system"])
    t_submitted = time.monotonic() - t0
    t_first = None
    ok = failed = 0
    first_error = ""
    for i, xpr in enumerate(xprs):
        try:
            value, _stdout, _stderr = xpr.get_results(timeout=opts["timeout"], check_interval=opts["check_interval"],
                                                      quiet=True)
            if value == i + base:
                ok += 1
            else:
                failed += 1
                first_error = first_error or f"job {i}: wrong result {value!r}"
        except Exception as exc:  # report, do not stop: the other jobs still count
            failed += 1
            first_error = first_error or f"job {i}: {type(exc).__name__}: {exc}"
        if t_first is None:
            t_first = time.monotonic() - t0
    t_all = time.monotonic() - t0
    if "WFL_EXPYRE_NO_MARK_PROCESSED" not in os.environ:
        for xpr in xprs:
            xpr.mark_processed()
    print(json.dumps({
        "import_s": t_import, "submit_all_s": t_submitted, "first_result_s": t_first, "all_results_s": t_all,
        "ok": ok, "failed": failed, "first_error": first_error,
        "peak_rss_bytes": _peak_rss(),
        "remote_rundir": config.systems[opts["system"]].remote_rundir,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
