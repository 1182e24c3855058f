"""A full local disk while the OutputSpec writes its final file (issue 15): the file is left as it
was (an earlier run's output stays whole), no half-written temporary is left, and the error names
the disk, the cause and the fix. The disk is a real size-limited tmpfs (root mounts it)."""

from __future__ import annotations

import pytest
from ase.io import read

from tests.helpers.configs import cu_configs
from tests.helpers.small_fs import small_filesystem
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import PermanentFailureError


def test_a_full_disk_while_the_output_file_is_written_leaves_the_old_file_whole_and_says_so() -> None:
    with small_filesystem(size="256k") as disk:
        final = disk / "out.xyz"
        OutputSpec(final).write(cu_configs(2))  # an earlier run's output
        before = final.read_bytes()
        configs = cu_configs(200)  # about 170 kB: staged, they fit; staged and written again, they do not
        for atoms in configs:
            atoms.info["padding"] = "x" * 300
        output = OutputSpec(final, overwrite=True)
        with pytest.raises(PermanentFailureError) as info:
            output.write(configs)  # stages them (fits), then writes the final file (does not)
        message = str(info.value)
        print(f"\n{message}")
        assert "no space left on device" in message and str(final) in message and "was not changed" in message
        assert "wfl-async clean" in message and "local_stage_dir" in message
        assert final.read_bytes() == before and len(read(final, ":")) == 2
        assert not [p for p in disk.iterdir() if ".closing" in p.name or p.name.endswith(".tmp")]



def test_a_full_disk_while_results_are_staged_says_so_and_leaves_the_old_file_whole() -> None:
    with small_filesystem(size="64k") as disk:
        final = disk / "out.xyz"
        OutputSpec(final).write(cu_configs(2))
        before = final.read_bytes()
        output = OutputSpec(final, overwrite=True)
        with pytest.raises(PermanentFailureError) as info:
            output.write(ConfigSet(cu_configs(200)))
        assert "no space left on device" in str(info.value) and "was not changed" in str(info.value)
        assert final.read_bytes() == before
