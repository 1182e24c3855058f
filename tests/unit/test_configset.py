"""ConfigSet and OutputSpec: wfl 0.3.5's semantics, and files readable by both packages."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import wfl.configset as wfl_cs

from tests.helpers.configs import cu_configs
from wfl_async.configset import ConfigSet, OutputSpec


def _locs(configs: ConfigSet | wfl_cs.ConfigSet) -> list[str]:
    return [at.info["_ConfigSet_loc"] for at in configs]


def _ids(configs: object) -> list[int]:
    return [at.info["config_i"] for at in configs]  # type: ignore[attr-defined]


def test_configset_from_nested_lists_records_locations() -> None:
    ats = cu_configs(4)
    cs = ConfigSet([[ats[0], ats[1]], [ats[2]], [[ats[3]]]])
    assert _locs(cs) == [" / 0 / 0", " / 0 / 1", " / 1 / 0", " / 2 / 0 / 0"]
    groups = list(cs.groups())
    assert [type(g) for g in groups] == [ConfigSet] * 3
    assert [g._enclosing_loc for g in groups if isinstance(g, ConfigSet)] == [" / 0", " / 1", " / 2"]
    assert _ids(groups[0]) == [0, 1]


def test_configset_single_file_and_cur_loc(tmp_path: Path) -> None:
    ase.io.write(tmp_path / "in.xyz", cu_configs(3))
    cs = ConfigSet(tmp_path / "in.xyz")
    assert cs.one_file() == tmp_path / "in.xyz"
    seen = []
    for at in cs:
        seen.append((cs.cur_loc, at.info["config_i"]))
    assert seen == [(" / 0", 0), (" / 1", 1), (" / 2", 2)]
    assert cs.cur_loc is None
    assert all(isinstance(g, type(cu_configs(1)[0])) for g in cs.groups())


def test_configset_file_root_and_glob_make_a_list_of_files(tmp_path: Path) -> None:
    ats = cu_configs(5)
    ase.io.write(tmp_path / "a_0.xyz", ats[:2])
    ase.io.write(tmp_path / "a_1.xyz", ats[2:])
    cs = ConfigSet("a_*.xyz", file_root=tmp_path)
    assert isinstance(cs.items, list) and len(cs.items) == 2
    assert _locs(cs) == [" / 0 / 0", " / 0 / 1", " / 1 / 0", " / 1 / 1", " / 1 / 2"]
    assert _ids(cs) == list(range(5))
    per_file = list(cs.groups())
    assert [_ids(g) for g in per_file] == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="does not exist"):
        ConfigSet("missing_*.xyz", file_root=tmp_path)
    with pytest.raises(ValueError, match="absolute"):
        ConfigSet(tmp_path / "a_0.xyz", file_root=tmp_path)


def test_configset_of_configsets_and_addition() -> None:
    ats = cu_configs(3)
    combined = ConfigSet(ats[:2]) + ConfigSet(ats[2:])
    assert _locs(combined) == [" / 0 / 0", " / 0 / 1", " / 1 / 0"]
    assert ConfigSet([]).items is None and list(ConfigSet(None)) == []
    with pytest.raises(RuntimeError, match="to_ConfigSet"):
        ConfigSet(OutputSpec())


def test_in_memory_outputspec_rebuilds_nesting_in_any_order() -> None:
    ats = cu_configs(4)
    cs = ConfigSet([ats[:2], ats[2:]])
    inputs = list(cs)
    out = OutputSpec()
    for at in reversed(inputs):
        out.store([at, at], at.info["_ConfigSet_loc"])
    out.close()
    result = out.to_ConfigSet()
    assert _locs(result)[:3] == [" / 0 / 0 / 0", " / 0 / 0 / 1", " / 0 / 1 / 0"]
    assert _ids(result) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not out.all_written()


def test_single_file_out_of_order_store_closes_in_input_order(tmp_path: Path) -> None:
    cs = ConfigSet(cu_configs(6))
    out = OutputSpec("out.xyz", file_root=tmp_path)
    inputs = list(cs)
    for i in [3, 0, 5, 1, 4, 2]:
        out.store(inputs[i], inputs[i].info["_ConfigSet_loc"])
    assert not (tmp_path / "out.xyz").exists()
    assert out.partial_paths()[0].exists()
    assert not out.all_written()
    out.close()
    assert out.all_written()
    assert not out.partial_paths()[0].exists()
    assert _ids(ase.io.read(tmp_path / "out.xyz", ":")) == list(range(6))
    assert _ids(out.to_ConfigSet()) == list(range(6))


def test_store_without_location_appends_in_call_order(tmp_path: Path) -> None:
    out = OutputSpec(tmp_path / "out.xyz")
    for at in cu_configs(3):
        out.store(at)
    with pytest.raises(RuntimeError, match="calls that did not provide it"):
        out.store(cu_configs(1)[0], " / 7")
    out.close()
    assert _locs(ConfigSet(tmp_path / "out.xyz")) == [" / 0", " / 1", " / 2"]
    with pytest.raises(ValueError, match="after OutputSpec.close"):
        out.store(cu_configs(1)[0])


def test_multiple_output_files_mirror_input_files(tmp_path: Path) -> None:
    ats = cu_configs(5)
    ase.io.write(tmp_path / "in_0.xyz", ats[:2])
    ase.io.write(tmp_path / "in_1.xyz", ats[2:])
    cs = ConfigSet(["in_0.xyz", "in_1.xyz"], file_root=tmp_path)
    out = OutputSpec(["out_0.xyz", "out_1.xyz"], file_root=tmp_path)
    for at in reversed(list(cs)):
        traj = [at.copy(), at.copy()]
        out.store(traj, at.info["_ConfigSet_loc"])
    with pytest.raises(ValueError, match="requires input_CS_loc"):
        out.store(ats[0])
    out.close()
    assert _ids(ase.io.read(tmp_path / "out_0.xyz", ":")) == [0, 0, 1, 1]
    assert _ids(ase.io.read(tmp_path / "out_1.xyz", ":")) == [2, 2, 3, 3, 4, 4]
    assert _locs(ConfigSet(tmp_path / "out_1.xyz"))[:3] == [" / 0 / 0", " / 0 / 1", " / 1 / 0"]
    assert _ids(out.to_ConfigSet()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_store_many_puts_each_output_where_store_would_across_files_and_skips_none(tmp_path: Path) -> None:
    """A batch of results as chunks bring them (files interleaved, nested, a None): the same files as one
    store each."""
    ats = cu_configs(5)
    ase.io.write(tmp_path / "in_0.xyz", ats[:2])
    ase.io.write(tmp_path / "in_1.xyz", ats[2:])
    inputs = list(ConfigSet(["in_0.xyz", "in_1.xyz"], file_root=tmp_path))
    order = [4, 0, 3, 1, 2]
    outputs = [([inputs[i].copy(), inputs[i].copy()] if i != 3 else None, inputs[i].info["_ConfigSet_loc"])
               for i in order]
    batched, one_by_one = (OutputSpec([f"{name}_0.xyz", f"{name}_1.xyz"], file_root=tmp_path)
                           for name in ("batched", "single"))
    batched.store_many(outputs[:3])
    batched.store_many(iter(outputs[3:]))
    for configs, loc in outputs:
        one_by_one.store(configs, loc)
    batched.close()
    one_by_one.close()
    for i in (0, 1):
        assert (tmp_path / f"batched_{i}.xyz").read_text() == (tmp_path / f"single_{i}.xyz").read_text()
    assert _ids(ase.io.read(tmp_path / "batched_1.xyz", ":")) == [2, 2, 4, 4]
    assert _locs(ConfigSet(tmp_path / "batched_0.xyz")) == [" / 0 / 0", " / 0 / 1", " / 1 / 0", " / 1 / 1"]


def test_interrupted_store_leaves_no_final_file_and_rerun_replaces_staging(tmp_path: Path) -> None:
    inputs = list(ConfigSet(cu_configs(4)))
    first = OutputSpec(tmp_path / "out.xyz")
    first.store(inputs[2], inputs[2].info["_ConfigSet_loc"])
    first.store(inputs[0], inputs[0].info["_ConfigSet_loc"])
    del first  # "crash": never closed
    partial = tmp_path / ".out.xyz.wfl_async_partial"
    assert partial.exists() and not (tmp_path / "out.xyz").exists()
    assert len(ase.io.read(partial, ":", format="extxyz")) == 2  # what was stored survives, flushed

    rerun = OutputSpec(tmp_path / "out.xyz")
    assert not rerun.all_written()
    for at in inputs[:2]:
        rerun.store(at, at.info["_ConfigSet_loc"])
    rerun.close()
    assert _ids(ase.io.read(tmp_path / "out.xyz", ":")) == [0, 1]  # the stale staging was not mixed in
    assert not partial.exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    ase.io.write(tmp_path / "out.xyz", cu_configs(1))
    keep = OutputSpec(tmp_path / "out.xyz")
    assert keep.all_written()
    with pytest.raises(FileExistsError):
        keep.store(cu_configs(2)[1], " / 0")
    replace = OutputSpec(tmp_path / "out.xyz", overwrite=True)
    for at in ConfigSet(cu_configs(3)):
        replace.store(at, at.info["_ConfigSet_loc"])
    assert len(ase.io.read(tmp_path / "out.xyz", ":")) == 1  # untouched until close
    replace.close()
    assert len(ase.io.read(tmp_path / "out.xyz", ":")) == 3


def test_tags_and_non_extxyz_format_go_through_ase(tmp_path: Path) -> None:
    out = OutputSpec(tmp_path / "out.traj", tags={"source": "test"})
    inputs = list(ConfigSet(cu_configs(3)))
    for at in reversed(inputs):
        out.store(at, at.info["_ConfigSet_loc"])
    out.close()
    read = list(ase.io.iread(tmp_path / "out.traj", ":"))
    assert [len(at) for at in read] == [len(at) for at in inputs]
    assert np.allclose(read[0].positions, inputs[0].positions, atol=1e-6)
    assert np.allclose(read[2].positions, inputs[2].positions, atol=1e-6)


def test_outputspec_pickles_mid_run(tmp_path: Path) -> None:
    import pickle

    out = OutputSpec(tmp_path / "out.xyz")
    inputs = list(ConfigSet(cu_configs(2)))
    out.store(inputs[1], inputs[1].info["_ConfigSet_loc"])
    clone = pickle.loads(pickle.dumps(out))
    clone.store(inputs[0], inputs[0].info["_ConfigSet_loc"])
    clone.close()
    assert _ids(ase.io.read(tmp_path / "out.xyz", ":")) == [0, 1]


# ---- compatibility with wfl 0.3.5 files, both directions ------------------------------


def _write_nested_with(cs_class: type, os_class: type, path: Path) -> None:
    ats = cu_configs(3)
    cs = cs_class([ats[:2], ats[2:]])
    out = os_class(str(path))
    for at in cs:
        out.store([at.copy(), at.copy()], at.info["_ConfigSet_loc"])
    out.close()


def test_file_written_by_wfl_is_read_with_same_structure(tmp_path: Path) -> None:
    _write_nested_with(wfl_cs.ConfigSet, wfl_cs.OutputSpec, tmp_path / "wfl.xyz")
    ours = ConfigSet(tmp_path / "wfl.xyz")
    theirs = wfl_cs.ConfigSet(str(tmp_path / "wfl.xyz"))
    assert _locs(ours) == _locs(theirs)
    assert [_ids(g) for g in ours.groups()] == [[0, 0, 1, 1], [2, 2]]


def test_file_written_by_us_is_byte_identical_to_wfl_and_read_by_wfl(tmp_path: Path) -> None:
    _write_nested_with(wfl_cs.ConfigSet, wfl_cs.OutputSpec, tmp_path / "wfl.xyz")
    _write_nested_with(ConfigSet, OutputSpec, tmp_path / "ours.xyz")
    assert (tmp_path / "ours.xyz").read_text() == (tmp_path / "wfl.xyz").read_text()
    theirs = wfl_cs.ConfigSet(str(tmp_path / "ours.xyz"))
    assert _locs(theirs) == [" / 0 / 0 / 0", " / 0 / 0 / 1", " / 0 / 1 / 0", " / 0 / 1 / 1",
                             " / 1 / 0 / 0", " / 1 / 0 / 1"]
    assert [len(list(g)) for g in theirs.groups()] == [4, 2]


def test_wfl_outputspec_treats_our_finished_output_as_done(tmp_path: Path) -> None:
    _write_nested_with(ConfigSet, OutputSpec, tmp_path / "ours.xyz")
    assert wfl_cs.OutputSpec(str(tmp_path / "ours.xyz")).all_written()


def _structure(cs: ConfigSet | wfl_cs.ConfigSet) -> list[object]:
    """Group structure as nested lists of config_i (Atoms at the top level become ints)."""
    out: list[object] = []
    for group in cs.groups():
        out.append(group.info["config_i"] if hasattr(group, "info") else _structure(group))
    return out


@pytest.mark.parametrize("layout", ["nested_list", "one_nested_file", "two_files", "flat_file"])
def test_iteration_and_groups_match_wfl(tmp_path: Path, layout: str) -> None:
    ats = cu_configs(5)
    if layout == "nested_list":
        def make(cls: type) -> object:
            fresh = cu_configs(5)
            return cls([[fresh[0], [fresh[1], fresh[2]]], [fresh[3]], fresh[4]])
    elif layout == "one_nested_file":
        _write_nested_with(wfl_cs.ConfigSet, wfl_cs.OutputSpec, tmp_path / "nested.xyz")

        def make(cls: type) -> object:
            return cls(str(tmp_path / "nested.xyz"))
    elif layout == "two_files":
        ase.io.write(tmp_path / "f_0.xyz", ats[:2])
        ase.io.write(tmp_path / "f_1.xyz", ats[2:])

        def make(cls: type) -> object:
            return cls([str(tmp_path / "f_0.xyz"), str(tmp_path / "f_1.xyz")])
    else:
        ase.io.write(tmp_path / "flat.xyz", ats)

        def make(cls: type) -> object:
            return cls(str(tmp_path / "flat.xyz"))
    ours, theirs = make(ConfigSet), make(wfl_cs.ConfigSet)
    assert _locs(ours) == _locs(theirs)  # type: ignore[arg-type]
    assert _ids(ours) == _ids(theirs)
    assert _structure(make(ConfigSet)) == _structure(make(wfl_cs.ConfigSet))  # type: ignore[arg-type]


def test_write_stores_every_config_at_its_location_and_closes(tmp_path: Path) -> None:
    out = OutputSpec(tmp_path / "w.xyz")
    out.write(ConfigSet([cu_configs(2), cu_configs(1)]))
    assert out.closed and out.all_written()
    assert _locs(ConfigSet(tmp_path / "w.xyz")) == [" / 0 / 0", " / 0 / 1", " / 1 / 0"]


# ---- one writer per output file, across processes ------------------------------------


def test_a_second_process_writing_the_same_output_is_refused_naming_the_first(tmp_path: Path) -> None:
    import subprocess
    import sys

    from wfl_async.errors import OutputInUseError

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wfl_async.configset import OutputSpec\n"
         "from ase.build import bulk\nout = OutputSpec(sys.argv[1])\nout.store(bulk('Cu'))\n"
         "print('holding', flush=True)\ntime.sleep(60)\n", str(tmp_path / "out.xyz")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        second = OutputSpec(tmp_path / "out.xyz")
        with pytest.raises(OutputInUseError, match=f"pid {holder.pid} on "):
            second.store(cu_configs(1)[0])
        assert second.try_claim() is not None
    finally:
        holder.kill()
        holder.wait()
    # the kernel let go of the dead holder's lock: no stale lock to remove by hand
    second = OutputSpec(tmp_path / "out.xyz")
    second.store(cu_configs(1)[0])
    second.close()
    assert len(ase.io.read(tmp_path / "out.xyz", ":")) == 1


@pytest.mark.parametrize("info", [
    {"_ConfigSet_loc": " / 7 / 2"},
    {"note": "a _ConfigSet_loc=\" / 5\"", "_ConfigSet_loc": " / 7 / 2"},  # the key's text inside another value
    {"_ConfigSet_loc": " / 3", "energy": -1.5, "config_type": "x y"},
    {"note": "no location here"},
    {"_ConfigSet_loc": ""},
])
def test_a_frames_location_is_read_as_ases_parser_reads_it(info: dict[str, object]) -> None:
    """The finalising sort reads each frame's location straight from its comment line (ase's parser was a
    fifth of a rerun's finalising): it must give what ase's parser gives, whatever else the line holds."""
    import io

    from ase import Atoms
    from ase.io.extxyz import key_val_str_to_dict

    from wfl_async._configset._partial import frame_loc

    buffer = io.StringIO()
    ase.io.write(buffer, Atoms("H", info=info), format="extxyz")
    comment = buffer.getvalue().splitlines()[1]
    assert frame_loc(comment) == (key_val_str_to_dict(comment).get("_ConfigSet_loc") if "_ConfigSet_loc" in comment
                                  else None)
