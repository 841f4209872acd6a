#!/usr/bin/env python3
"""Rewrite the settings table in docs/architecture.md from TTAConfig.

    uv run python scripts/gen_settings_table.py          # rewrite the block between the markers
    uv run python scripts/gen_settings_table.py --check  # exit 1 if the block is out of date, write nothing

The table is rendered by ``src.orchestration.settings_table.render_settings_table``; only the text
between ``<!-- settings-table:begin -->`` and ``<!-- settings-table:end -->`` is replaced.
tests/unit/test_settings_table.py fails while the document and the code disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
sys.path.insert(0, str(REPO))

from src.orchestration.settings_table import render_settings_table, replace_block  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the table is up to date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    try:
        updated = replace_block(text, render_settings_table())
    except ValueError as exc:
        print(f"{DOC.relative_to(REPO)}: {exc}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"{DOC.relative_to(REPO)}: settings table up to date")
        return 0
    if args.check:
        print(f"{DOC.relative_to(REPO)}: settings table out of date; run: uv run python scripts/gen_settings_table.py",
              file=sys.stderr)
        return 1
    DOC.write_text(updated, encoding="utf-8")
    print(f"{DOC.relative_to(REPO)}: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
