"""docs/architecture.md's settings table is the one rendered from TTAConfig, and covers every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.orchestration.config import TTAConfig
from src.orchestration.settings_table import (
    BEGIN_MARKER,
    END_MARKER,
    extract_block,
    render_settings_table,
    replace_block,
)
from src.orchestration.sources import env_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
REGENERATE = "run `uv run python scripts/gen_settings_table.py` and commit docs/architecture.md"


def _doc_block() -> str:
    return extract_block(DOC.read_text(encoding="utf-8"))


def _rows(block: str) -> dict[str, list[str]]:
    """Table rows keyed by their first cell, cells stripped (header and separator excluded)."""
    rows = {}
    for line in block.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def test_doc_block_is_the_rendered_table() -> None:
    assert _doc_block() == render_settings_table(), f"docs/architecture.md's settings table is out of date: {REGENERATE}"


def test_every_setting_has_a_row_with_its_env_var() -> None:
    rows = _rows(_doc_block())
    missing = [name for name in TTAConfig.model_fields if f"`{name}`" not in rows]
    assert not missing, f"settings missing from docs/architecture.md: {missing}; {REGENERATE}"
    wrong = {name: rows[f"`{name}`"][1] for name in TTAConfig.model_fields
             if rows[f"`{name}`"][1] != f"`{env_name(name)}`"}
    assert not wrong, f"wrong environment variable in docs/architecture.md: {wrong}; {REGENERATE}"
    extra = set(rows) - {f"`{name}`" for name in TTAConfig.model_fields}
    assert not extra, f"rows for settings TTAConfig does not have: {sorted(extra)}; {REGENERATE}"


def test_rows_show_defaults_bounds_and_descriptions() -> None:
    rows = _rows(render_settings_table())
    assert rows["`measurement_interval`"][3:5] == ["`15`", "`1 <= x <= 3600`"]
    assert rows["`electricitymaps_token`"][3] == "unset"  # a secret's None default
    assert rows["`energy_source`"][4] == "one of `auto`, `rapl`, `cpu_load_tdp`, `codecarbon`"
    assert rows["`project_name`"][4].startswith("length 1 to 100; pattern ")
    assert rows["`log_file`"][2] == "`Path \\| None`"  # "|" escaped: it would split the cell
    for name, info in TTAConfig.model_fields.items():
        assert info.description and rows[f"`{name}`"][5] == " ".join(info.description.split())


def test_replace_block_keeps_the_text_around_the_markers() -> None:
    text = f"# Doc\nintro\n{BEGIN_MARKER}\nstale | table\n{END_MARKER}\n\nafter\n"
    updated = replace_block(text, "| new |\n")
    assert updated == f"# Doc\nintro\n{BEGIN_MARKER}\n| new |\n{END_MARKER}\n\nafter\n"
    assert extract_block(updated) == "| new |\n"


@pytest.mark.parametrize("text", [
    "no markers at all\n",
    f"{BEGIN_MARKER}\nonly the begin marker\n",
    f"{END_MARKER}\n{BEGIN_MARKER}\n",
    f"{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n",
])
def test_bad_markers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        replace_block(text, "| t |\n")
