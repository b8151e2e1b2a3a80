"""The DPO tests' log-handler cleanup serves the reward-model tests too (tests/dpo/conftest.py says why)."""
from tests.dpo.conftest import _drop_log_handlers  # noqa: F401  (an autouse fixture: importing registers it)
