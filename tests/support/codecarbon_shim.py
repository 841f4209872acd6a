"""A codecarbon install that is broken until a flag file goes away: the real package, then.

``shim_env(root)`` returns the environment that puts the shim first on the path, and the flag
file to remove to "fix the install". Python does not cache a failed import, so the next
``import codecarbon`` in the same process runs the shim again and, without the flag, hands
over to the real package: what an operator fixing a broken install and sending SIGHUP sees.
"""

from __future__ import annotations

from pathlib import Path

BROKEN_MESSAGE = "codecarbon install broken (test shim)"

_SHIM = f'''
import importlib, os, sys
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.exists(os.path.join(_here, "BROKEN")):
    raise ImportError({BROKEN_MESSAGE!r})
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["codecarbon"]
sys.modules["codecarbon"] = importlib.import_module("codecarbon")
'''


def shim_env(root: Path) -> tuple[dict[str, str], Path]:
    pkg = root / "codecarbon-shim" / "codecarbon"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_SHIM)
    flag = pkg.parent / "BROKEN"
    flag.touch()
    return {"PYTHONPATH": str(pkg.parent)}, flag
