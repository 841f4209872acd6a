#!/usr/bin/env python3
"""Health check for the Carbon component (the deployment guide's runbook script).

Same implementation as `tta-carbon check`; run `uv run python scripts/health_check_carbon.py --help`.
Exit 0 when healthy, 1 otherwise; warnings (⚠️) alone do not fail.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from src.orchestration import TTAConfig  # noqa: E402, F401  (the CLI loads it lazily: fail here, on one line)
    from src.service.cli import main  # noqa: E402
except (ImportError, SyntaxError) as exc:  # run directly: not the project's Python 3.12 venv
    missing = getattr(exc, "name", None) or type(exc).__name__
    print(f"❌ health_check_carbon.py: cannot load the project ({missing}) with {sys.executable} "
          f"(Python {sys.version.split()[0]}); run it from the install dir as: "
          "uv run --no-sync python scripts/health_check_carbon.py", file=sys.stderr)
    sys.exit(1)

if __name__ == "__main__":
    sys.exit(main(["check", *sys.argv[1:]]))
