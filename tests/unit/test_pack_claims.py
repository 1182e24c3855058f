"""Claims on a pack's queue (:mod:`wfl_async.pack.claims`) by many racing processes on a real directory.

The queue is filled by the real enqueue command (bash), several at once; the claimers are
separate processes. Each claim is counted by a line its claimer appends to the chunk's own
``claims`` file right after taking it, so a chunk taken twice (or never) shows there.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

from wfl_async.pack import queue
from wfl_async.pack.claims import Claimer

PID = "feedfacecafebeef"
CLAIMS = "claims"


def sh(root: Path, command: str) -> str:
    return subprocess.run(["bash", "-c", command], cwd=root, check=True, capture_output=True, text=True).stdout


def enqueue(root: Path, names: list[str], per_command: int = 100) -> None:
    """Queue ``names`` as the coordinator does: one command per batch."""
    for start in range(0, len(names), per_command):
        sh(root, queue.enqueue_command(PID, names[start:start + per_command]))


def claim_until_done(root: str, worker: str, enqueued: str) -> None:
    """A claimer process: take chunks, record each, until the queue stays empty once ``enqueued`` exists."""
    claimer = Claimer(Path(root) / queue.queue_dir(PID), worker)
    while True:
        taken = claimer.claim()
        if taken is None:
            if os.path.exists(enqueued) and claimer.claim() is None:
                return
            time.sleep(0.01)
            continue
        with open(Path(root) / taken.name / CLAIMS, "a") as record:
            record.write(f"{worker}\n")
        claimer.done(taken.name)


def claim_counts(root: Path, names: list[str]) -> dict[str, int]:
    counts = {}
    for name in names:
        record = root / name / CLAIMS
        counts[name] = len(record.read_text().splitlines()) if record.exists() else 0
    return counts


def start(target: object, *args: object) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


def test_racing_claimers_and_enqueuers_take_every_chunk_exactly_once(tmp_path: Path) -> None:
    names = [f"c{i:05d}" for i in range(600)]
    for name in names:
        (tmp_path / name).mkdir()
    enqueued = tmp_path / "enqueued"
    claimers = [start(claim_until_done, str(tmp_path), f"w{i}", str(enqueued)) for i in range(5)]
    # three enqueuers at once: their slots must not collide (each takes a free number by ln)
    enqueuers = [start(enqueue, tmp_path, names[i::3], 20) for i in range(3)]
    for process in enqueuers:
        process.join(300)
        assert process.exitcode == 0
    enqueued.touch()
    for process in claimers:
        process.join(300)
        assert process.exitcode == 0
    assert claim_counts(tmp_path, names) == dict.fromkeys(names, 1)
    q = tmp_path / queue.queue_dir(PID)
    slots = sorted(int(n) for n in os.listdir(q / "slots"))
    assert slots == list(range(30))  # 600 names in batches of 20: 30 slots, numbered without a gap
    assert (q / "slots" / "29").read_text().split()[0] == "600"  # the running total
    assert os.listdir(q / "todo") == [] and os.listdir(q / "taken") == []
    # every claimer took some: they raced on the same names
    assert len({line for n in names for line in (tmp_path / n / CLAIMS).read_text().split()}) > 1


def test_a_claimer_killed_mid_claim_leaves_its_entry_taken_and_the_requeue_gives_it_to_another_once(
        tmp_path: Path) -> None:
    names = [f"c{i:04d}" for i in range(200)]
    for name in names:
        (tmp_path / name).mkdir()
    enqueue(tmp_path, names)
    q = tmp_path / queue.queue_dir(PID)
    # the fault: one entry is a named pipe, so the claimer that renames it blocks inside its claim
    # (reading the entry) until killed
    trap = names[123]
    os.unlink(q / "todo" / trap)
    os.mkfifo(q / "todo" / trap)
    enqueued = tmp_path / "enqueued"
    enqueued.touch()
    claimers = {f"w{i}": start(claim_until_done, str(tmp_path), f"w{i}", str(enqueued)) for i in range(4)}
    deadline = time.monotonic() + 300
    while not (victim := [w for w in claimers if (q / "taken" / f"{trap}@{w}").exists()]):
        assert time.monotonic() < deadline, "no claimer took the trapped entry"
        time.sleep(0.01)
    os.kill(claimers[victim[0]].pid, signal.SIGKILL)  # kill -9, mid-claim
    for process in claimers.values():
        process.join(300)
    entry = q / "taken" / f"{trap}@{victim[0]}"
    assert entry.exists() and claim_counts(tmp_path, [trap]) == {trap: 0}  # half-claimed: taken, never run
    entry.unlink()  # the pipe (the fault) goes; the entry as a worker left it: empty
    entry.touch()
    # the driver's path: the worker is gone from the scheduler's queue, its entries go back
    command = queue.requeue_command(PID, [(trap, victim[0])], [victim[0]])
    sh(tmp_path, command)
    sh(tmp_path, command)  # repeated: nothing more
    listing = queue.parse_listing(sh(tmp_path, queue.listing_command(str(tmp_path)))).packs[PID]
    assert listing.retry == {trap} and listing.taken == {} and listing.queued == 1
    claim_until_done(str(tmp_path), "w9", str(enqueued))
    assert claim_counts(tmp_path, names) == dict.fromkeys(names, 1)
    assert (tmp_path / trap / CLAIMS).read_text().split() == ["w9"]
    assert os.listdir(q / "retry") == [] and os.listdir(q / "taken") == []


def test_a_released_chunk_goes_to_another_worker_and_is_not_taken_back_by_its_releaser(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    enqueue(tmp_path, ["a", "b"])
    q = tmp_path / queue.queue_dir(PID)
    first, second = Claimer(q, "w1"), Claimer(q, "w2")
    taken = first.claim()
    assert taken is not None and taken.name == "a" and taken.put_backs == ()
    first.release("a")  # it does not fit w1's time left
    listing = queue.parse_listing(sh(tmp_path, queue.listing_command(str(tmp_path))))
    assert listing.packs[PID].retry == {"a"} and listing.packs[PID].taken == {}
    states = queue.ChunkStates(listing, {})
    assert states.get(queue.chunk_remote_id(PID, "a")) is queue.QueueState.QUEUED
    again = first.claim()
    assert again is not None and again.name == "b"  # not a again
    assert first.claim() is None
    back = second.claim()
    assert back is not None and back.name == "a"
    assert second.claim() is None


def test_a_claim_costs_the_same_whatever_is_queued(tmp_path: Path) -> None:
    # counted in work, not time: the slots read and renames lost by one worker's claims
    names = [f"c{i:05d}" for i in range(600)]
    enqueue(tmp_path, names, per_command=300)
    q = tmp_path / queue.queue_dir(PID)
    early = Claimer(q, "w1")
    for _ in range(10):
        assert early.claim() is not None
    late = Claimer(q, "w2")  # starts once w1 took 10: the shared head sends it past them
    taken = late.claim()
    assert taken is not None and taken.name == "c00010"
    assert late.stats == {"renames_lost": 0, "slots_read": 1}
    for _ in range(400):
        assert early.claim() is not None
    taken = late.claim()  # 400 further on: it reads one more slot, loses no rename
    assert taken is not None and taken.name == "c00411"
    assert late.stats == {"renames_lost": 0, "slots_read": 2}


def test_the_survey_answer_grows_with_what_changed_not_with_the_chunks_queued(tmp_path: Path) -> None:
    def survey() -> tuple[str, queue.PackQueue]:
        text = sh(tmp_path, queue.listing_command(str(tmp_path)))
        return text, queue.parse_listing(text).packs[PID]

    names = [f"c{i:05d}" for i in range(1000)]
    enqueue(tmp_path, names[:40], per_command=300)
    small, listed = survey()
    assert listed.queued == 40
    enqueue(tmp_path, names[40:], per_command=300)
    large, listed = survey()
    assert listed.queued == 1000
    assert len(large) - len(small) <= 2  # the total's digits: nothing per queued chunk
    states = queue.ChunkStates(queue.parse_listing(large), {})
    assert {states.get(queue.chunk_remote_id(PID, n)) for n in (names[0], names[-1])} == {queue.QueueState.QUEUED}
    # two workers take one chunk each: the answer grows by those two lines
    for worker in ("w1", "w2"):
        assert Claimer(tmp_path / queue.queue_dir(PID), worker).claim() is not None
    busy, listed = survey()
    assert listed.queued == 998 and listed.taken == {names[0]: "w1", names[1]: "w2"}
    assert sorted(set(busy.splitlines()) - set(large.splitlines())) == [
        "C 1000 2", f"T {names[0]}@w1", f"T {names[1]}@w2"]
