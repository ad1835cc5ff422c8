"""The fixtures of the webhooks tests: the same API, worker, keys and moving sandbox."""

from tests.webhooks.conftest import (  # noqa: F401  (fixtures)
    flow_api,
    flow_keys,
    flow_settings,
    flow_state,
    moving_sandbox,
)
