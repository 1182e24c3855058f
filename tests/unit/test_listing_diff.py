"""A queue listing read as its changed lines (system/listing.py): the states, and the ids to look at."""

from __future__ import annotations

from wfl_async.jobs.states import QueueState
from wfl_async.scheduler import get_scheduler
from wfl_async.system.listing import ListingDiff


def test_only_new_and_gone_lines_name_changed_ids() -> None:
    diff = ListingDiff(get_scheduler("slurm"))
    states, changed = diff.parse("1|PENDING|Priority\n2|RUNNING|None\n3|PENDING|Priority\n")
    assert changed is None and states == {"1": QueueState.QUEUED, "2": QueueState.RUNNING, "3": QueueState.QUEUED}
    states, changed = diff.parse("2|RUNNING|None\n3|RUNNING|None\n4|PENDING|Resources\n")
    assert changed == {"1", "3", "4"}
    assert states == {"2": QueueState.RUNNING, "3": QueueState.RUNNING, "4": QueueState.QUEUED}
    states["9"] = QueueState.RUNNING  # a caller adding to its copy changes nothing kept
    assert diff.parse("2|RUNNING|None\n3|RUNNING|None\n4|PENDING|Resources\n") == (
        {"2": QueueState.RUNNING, "3": QueueState.RUNNING, "4": QueueState.QUEUED}, set())


def test_after_a_listing_that_failed_everything_may_have_changed() -> None:
    diff = ListingDiff(get_scheduler("slurm"))
    diff.parse("1|RUNNING|None\n")
    diff.lost()
    assert diff.parse("1|RUNNING|None\n") == ({"1": QueueState.RUNNING}, None)


def test_a_listing_not_by_line_is_parsed_whole_every_time() -> None:
    diff = ListingDiff(get_scheduler("pbs"))
    text = "123.server  user  q  name  --  1  1  --  01:00:00 R 00:01\n"
    first, second = diff.parse(text), diff.parse(text)
    assert first[1] is None and second[1] is None and dict(second[0]) == {"123": QueueState.RUNNING}
