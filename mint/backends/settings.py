"""Where the servers are: the MINT_* variables every MinT process reads.

`python -m deploy.local env` prints them for the local stack; on Kubernetes they come
from the deployment's environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .s3 import S3Settings

KAFKA_BOOTSTRAP = "MINT_KAFKA_BOOTSTRAP"
S3_ENDPOINT = "MINT_S3_ENDPOINT"
S3_ACCESS_KEY = "MINT_S3_ACCESS_KEY"
S3_SECRET_KEY = "MINT_S3_SECRET_KEY"
ALL = (KAFKA_BOOTSTRAP, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY)


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    s3: S3Settings


def servers_from_env(env: Mapping[str, str] | None = None) -> Servers:
    """The servers named in the environment; SystemExit saying what is missing."""
    env = os.environ if env is None else env
    missing = [k for k in ALL if not env.get(k)]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: for the local stack, "
            "`eval $(python -m deploy.local env)` sets them"
        )
    return Servers(
        env[KAFKA_BOOTSTRAP], S3Settings(env[S3_ENDPOINT], env[S3_ACCESS_KEY], env[S3_SECRET_KEY])
    )
