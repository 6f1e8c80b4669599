"""Whether a flow run may let a model run its own code (``trust_remote_code``): a run from the command line or
Python carries the user's own flag; a run submitted to a served deployment (anyone who reaches the Prefect API can
submit one) only when the serving process was started with ``differ serve --trust-remote-code``."""

from __future__ import annotations

import os

from differ_common.errors import ConfigError

ALLOW_ENV = "DIFFER_SERVE_TRUST_REMOTE_CODE"


def deployment_run() -> bool:
    """Is this flow run one that was submitted to a deployment (through the Prefect API)?"""
    from prefect.runtime import deployment

    return deployment.id is not None


def check_remote_code(trust_remote_code: bool) -> None:
    """A ConfigError when a deployment run asks for ``trust_remote_code`` and the serving process does not allow it."""
    if trust_remote_code and deployment_run() and os.environ.get(ALLOW_ENV) != "1":
        raise ConfigError(
            "trust_remote_code: this run was submitted to a served deployment and `differ serve` was not started "
            "with --trust-remote-code, so no model's own code runs; submit it with trust_remote_code=false, or "
            "restart the server with `differ serve --trust-remote-code`"
        )
