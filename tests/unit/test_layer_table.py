"""The layer table of docs/architecture.md and the layers contract that CI runs (``lint-imports``,
``[tool.importlinter]`` in pyproject.toml) name the same rows in the same order, so neither can
drift alone."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def doc_rows() -> list[set[str]]:
    """Each table row's modules, bottom up, as import names under ``wfl_async``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("| layer | module | job |"):text.index("## The cost model")]
    rows = []
    for line in table.splitlines()[2:]:
        if line.startswith("|"):
            paths = re.findall(r"`([^`]+)`", line.split("|")[2])
            rows.append({Path(p.removeprefix("wfl_async/").rstrip("/")).stem for p in paths})
    return rows


def contract_rows() -> list[set[str]]:
    """Each layer of the layers contract, bottom up."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [{name.strip() for name in re.split(r"[|:]", layer)} for layer in reversed(layers)]


def test_the_doc_table_and_the_layers_contract_list_the_same_rows() -> None:
    assert doc_rows() == contract_rows()


def test_every_module_of_the_package_is_in_one_row() -> None:
    modules = {p.stem for p in (ROOT / "wfl_async").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    rows = doc_rows()
    assert sorted(m for row in rows for m in row) == sorted(modules)
