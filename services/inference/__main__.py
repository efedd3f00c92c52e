"""Run an inference node.

  python -m services.inference --name node-1 --port 50061 --budget-mib 256 \
      --tokens-file tokens.json

It serves `mint.v1.Inference` (plus health and reflection) from the adapters resident in
its slots, follows the desired-residency topic to load (S3 GET, sha256 checked) or evict
them, and reports to the status topic every second. Every call is authenticated with the
tokens file: the router's service token (an entry with `"service": true`) acting for the
caller it names, or a caller's own token; either way only the caller's tenants' adapters
serve. Kafka and S3 come from MINT_KAFKA_BOOTSTRAP and MINT_S3_* (`python -m deploy.local
env` prints them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mint import cli
from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.settings import servers_from_env
from mint.rpc.auth import TokenTable

from .app import NodeConfig, NodeProcess

MiB = 1024 * 1024


def main() -> None:
    parser = cli.parser("python -m services.inference", __doc__)
    parser.add_argument("--name", required=True, help="node name, unique in the fleet")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    parser.add_argument(
        "--advertise-host", default="127.0.0.1", help="host the router should dial (pod IP)"
    )
    parser.add_argument("--tokens-file", type=Path, help="or MINT_TOKENS_FILE")
    parser.add_argument("--bucket", default="mint", help="bucket holding the projection")
    parser.add_argument("--prefix", default="", help="key prefix of the projection")
    parser.add_argument("--topics-prefix", default="mint.residency")
    parser.add_argument("--base-dir", help="a local transformers causal-LM directory")
    parser.add_argument("--base-seed", type=int, default=0, help="seed of the built-in base")
    parser.add_argument("--targets", default="q_proj,v_proj", help="LoRA target modules")
    parser.add_argument("--slots", type=int, default=64, help="adapter slots (slot 0: none)")
    parser.add_argument("--max-rank", type=int, default=32, help="largest (stacked) rank")
    parser.add_argument("--budget-mib", type=float, default=256, help="adapter memory budget")
    parser.add_argument("--disk-cache-dir", help="local disk tier for adapter weights")
    parser.add_argument("--disk-cache-mib", type=float, default=4096, help="its budget")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    parser.add_argument("--grace-s", type=float, default=5.0, help="drain time on SIGTERM")
    args = parser.parse_args()
    tokens_file = args.tokens_file or os.environ.get("MINT_TOKENS_FILE")
    if not tokens_file:
        sys.exit("no tokens: pass --tokens-file or set MINT_TOKENS_FILE (with the router's)")
    servers = servers_from_env()
    topics = ResidencyTopics(args.topics_prefix)
    topics.create(servers.kafka_bootstrap)  # idempotent
    node = NodeProcess(
        NodeConfig(
            name=args.name,
            kafka_bootstrap=servers.kafka_bootstrap,
            s3=servers.s3,
            tokens=TokenTable.from_file(Path(tokens_file)),
            bucket=args.bucket,
            prefix=args.prefix,
            topics=topics,
            host=args.host,
            port=args.port,
            advertise_host=args.advertise_host,
            base_dir=args.base_dir,
            base_seed=args.base_seed,
            targets=tuple(args.targets.split(",")),
            slots=args.slots,
            max_rank=args.max_rank,
            budget_bytes=int(args.budget_mib * MiB),
            max_prompt_tokens=args.max_prompt_tokens,
            batch_window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
            metrics_port=args.metrics_port,
            disk_cache_dir=args.disk_cache_dir,
            disk_budget_bytes=int(args.disk_cache_mib * MiB),
        )
    )
    print(f"node {args.name} serving on {node.address}", flush=True)
    stop = cli.stop_on_signals()
    stop.wait()
    node.stop(args.grace_s)


if __name__ == "__main__":
    main()
