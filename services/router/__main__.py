"""Run the router, the front door for `mint.v1.Inference`.

  python -m services.router --port 50060 --tokens-file tokens.json \
      --service-token-file service-token

Callers authenticate with `authorization: Bearer <token>` (the registry's tokens file
format) and may use the adapters of their tenants. Each request goes to a node where all
its adapters are resident, sent with the service token (whose digest the nodes' tokens
file lists with `"service": true`) and the caller it is for; on a miss the router asks
the controller for placement and waits within the request's deadline. Kafka and S3 come
from MINT_KAFKA_BOOTSTRAP and MINT_S3_*.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from mint import cli
from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.settings import servers_from_env
from mint.rpc.auth import TokenTable

from .app import RouterConfig, RouterProcess


def main() -> None:
    parser = cli.parser("python -m services.router", __doc__)
    parser.add_argument("--name", default=socket.gethostname(), help="router name in reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50060, help="0 picks a free port")
    parser.add_argument("--tokens-file", type=Path, help="or MINT_TOKENS_FILE")
    parser.add_argument(
        "--service-token-file", type=Path, help="the token nodes know; or MINT_SERVICE_TOKEN"
    )
    parser.add_argument("--bucket", default="mint", help="bucket holding the projection")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--topics-prefix", default="mint.residency")
    parser.add_argument("--silence-s", type=float, default=4.0, help="when a node is dead")
    parser.add_argument(
        "--cold-start-s", type=float, default=30.0, help="longest wait on a miss (no deadline)"
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    parser.add_argument("--grace-s", type=float, default=5.0)
    args = parser.parse_args()
    tokens_file = args.tokens_file or os.environ.get("MINT_TOKENS_FILE")
    if not tokens_file:
        sys.exit("no tokens: pass --tokens-file or set MINT_TOKENS_FILE")
    service_token = (
        args.service_token_file.read_text().strip()
        if args.service_token_file
        else os.environ.get("MINT_SERVICE_TOKEN", "")
    )
    if not service_token:
        sys.exit("no service token: pass --service-token-file or set MINT_SERVICE_TOKEN")
    servers = servers_from_env()
    topics = ResidencyTopics(args.topics_prefix)
    topics.create(servers.kafka_bootstrap)
    router = RouterProcess(
        RouterConfig(
            name=args.name,
            kafka_bootstrap=servers.kafka_bootstrap,
            s3=servers.s3,
            tokens=TokenTable.from_file(Path(tokens_file)),
            service_token=service_token,
            bucket=args.bucket,
            prefix=args.prefix,
            topics=topics,
            address=f"{args.host}:{args.port}",
            silence_s=args.silence_s,
            cold_start_s=args.cold_start_s,
            metrics_port=args.metrics_port,
        )
    )
    print(f"router serving on {args.host}:{router.port}", flush=True)
    stop = cli.stop_on_signals()
    stop.wait()
    router.stop(args.grace_s)


if __name__ == "__main__":
    main()
