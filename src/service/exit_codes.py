"""Exit codes of every `tta-carbon` command (sysexits.h values, as systemd's docs suggest)."""

EX_OK = 0
EX_FAILURE = 1  # check: unhealthy; report/prune: nothing to read, or an error; reload: no daemon to reload
EX_UNAVAILABLE = 69  # run: the metrics port cannot be bound, or another daemon holds the directories
EX_CANTCREAT = 73  # run: the output or state directory is unusable
EX_TEMPFAIL = 75  # reload: the daemon reported no outcome within the timeout
EX_CONFIG = 78  # any command: the configuration is invalid (systemd's RestartPreventExitStatus); reload: rejected
