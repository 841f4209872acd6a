#!/usr/bin/env python3
"""Health check for the Carbon component (the deployment guide's runbook script).

Same implementation as `tta-carbon check`; run `uv run python scripts/health_check_carbon.py --help`.
Exit 0 when healthy, 1 otherwise; warnings (⚠️) alone do not fail.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.service.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["check", *sys.argv[1:]]))
