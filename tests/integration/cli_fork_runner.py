"""Run `tta-carbon` once per job, each in its own forked process of one pre-warmed interpreter.

Used by test_bad_config_corpus.py: starting a fresh interpreter costs about a second (codecarbon,
pydantic, structlog imports), which for dozens of cases is most of the suite's time. Here the CLI
modules are imported once; every job then runs in a fork with its own environment, working directory,
stdin (/dev/null), stdout and stderr (files), calls the real ``src.service.cli.main(argv)`` and exits
with its return code, exactly as the console script would.

stdin: a JSON list of jobs {"argv", "env", "cwd", "stdout", "stderr", "memory_limit"}; stdout: a JSON list of exit codes
(negative: killed by that signal).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback

# `tta-carbon run` imports daemon and logs lazily; import them before forking so each job starts warm.
import src.service.daemon
import src.service.logs  # noqa: F401
from src.service import cli

JOB_TIMEOUT_S = 30


def run_job(job: dict) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 70
        try:
            signal.alarm(JOB_TIMEOUT_S)  # a config that slipped through would otherwise run forever
            if job.get("memory_limit"):  # a runaway case fails with MemoryError instead of OOM-killing the host
                resource.setrlimit(resource.RLIMIT_AS, (job["memory_limit"], job["memory_limit"]))
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            stdin = os.open(os.devnull, os.O_RDONLY)
            out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(stdin, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            code = int(cli.main(job["argv"]))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 -- a traceback is a finding: show it like the console script would
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    jobs = json.load(sys.stdin)
    codes = [run_job(job) for job in jobs]
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
