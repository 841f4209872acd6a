"""Writes records through the real NdjsonSink in a tight loop until SIGKILLed.

Used by test_integrity.py. The parent imports everything once, then for each
line "go NAME" on stdin forks a child that writes records in a tight loop, prints
the child's pid, and reports how it died once the test has killed it.
argv: OUTPUT_DIR
"""

import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from src.components.carbon.accounting import Accountant, Identity  # noqa: E402
from src.components.carbon.record import ComponentEnergy, Intensity, IntervalEnergy, Totals  # noqa: E402
from src.components.carbon.sinks.ndjson import NdjsonSink  # noqa: E402


def write_forever(out: Path, name: str) -> None:
    sink = NdjsonSink(out)
    acct = Accountant(Totals())
    ident = Identity(str(uuid.uuid4()), "host", "P" * 200, name)  # long lines: more page crossings
    intensity = Intensity(50.0, "fixed", "FRA")
    energy = IntervalEnergy({"cpu": ComponentEnergy(1.5, "rapl"), "ram": ComponentEnergy(0.25, "rapl")},
                            devices={f"package-{i}/core": float(i) for i in range(40)})
    while True:
        sink.write(acct.account(energy, end_wall=1.7e9, elapsed_s=1.0, intensity=intensity, identity=ident))


out = Path(sys.argv[1])
for line in sys.stdin:
    name = line.split()[1]
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(out, name)
        finally:
            os._exit(1)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
