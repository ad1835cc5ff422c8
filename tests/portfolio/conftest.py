"""The fixtures of the portfolio tests: the webhooks tests' API, worker, keys and moving
sandbox; and the consents tests' API and sandbox bank (for re-checks after a sync)."""

from tests.consents.conftest import (  # noqa: F401  (fixtures)
    app_state,
    browser,
    keys,
    state,
)
from tests.webhooks.conftest import (  # noqa: F401  (fixtures)
    flow_api,
    flow_keys,
    flow_settings,
    flow_state,
    moving_sandbox,
)
