"""Fixtures for tests/integration; the helpers live in ops_helpers.py (importable by name)."""

from tests.integration.ops_helpers import daemons, service_account, shm_tmp, tta_users, world_tmp  # noqa: F401  (fixtures)
