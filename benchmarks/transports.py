"""What a command and a file stream cost over each ssh client: asyncssh, and OpenSSH's ControlMaster.

Against the shared test sshd (``scripts/testinfra/start_sshd.sh``, host alias ``wfl-async-test``),
with a master connection already open for OpenSSH (as a two-factor user would have)::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/transports.py --commands 200 --megabytes 32

Prints per client: the first command (connect included), the median of sequential commands and
the driver's CPU (process time, its ``ssh`` processes not included) per sequential command,
50 concurrent commands, and one upload and one download of ``--megabytes`` in one stream each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfl_async.transport.base import Transport  # noqa: E402
from wfl_async.transport.openssh import OpenSshTransport  # noqa: E402
from wfl_async.transport.ssh import SshTransport  # noqa: E402

INFRA = Path(os.environ.get("WFL_ASYNC_TESTINFRA_DIR", "/tmp/wfl_async_testinfra"))


async def measure(transport: Transport, commands: int, megabytes: int) -> dict[str, float]:
    started = time.perf_counter()
    await transport.run("true")
    first = time.perf_counter() - started
    times = []
    cpu = time.process_time()
    for _ in range(commands):
        started = time.perf_counter()
        await transport.run("true", retry=True)  # as a poll sends it
        times.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(transport.run, "true")
    concurrent = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data.bin").write_bytes(os.urandom(megabytes * 1024 * 1024))
        remote = f"wfl_async_bench_transports/{os.getpid()}"
        started = time.perf_counter()
        await transport.upload(Path(tmp), ["data.bin"], remote)
        upload = time.perf_counter() - started
        started = time.perf_counter()
        await transport.download(remote, ["data.bin"], Path(tmp) / "back")
        download = time.perf_counter() - started
        await transport.run(f"rm -rf {remote}")
    await transport.aclose()
    return {"first_ms": first * 1e3, "median_ms": statistics.median(times) * 1e3,
            "driver_cpu_ms": cpu / commands * 1e3, "concurrent50_ms": concurrent * 1e3,
            "upload_s": upload, "download_s": download, "connections": transport.stats.connections_opened}


async def main(args: argparse.Namespace) -> None:
    config = [str(INFRA / "ssh_config")]
    for name, transport in [("asyncssh", SshTransport("wfl-async-test", ssh_config=config)),
                            ("openssh", OpenSshTransport("wfl-async-test", ssh_config=config))]:
        figures = await measure(transport, args.commands, args.megabytes)
        print(f"{name:9s} " + "  ".join(f"{k} {v:.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=32)
    anyio.run(main, parser.parse_args())
