"""Run an inference node.

  python -m services.inference --name node-1 --tokens-file tokens.json [--port 50061]

It serves `mint.v1.Inference` (plus health and reflection) from the adapters resident in
its slots, follows the desired-residency topic to load (S3 GET, sha256 checked) or evict
them, and reports to the status topic every second. Every call is authenticated: the
router acting for the caller it names (by its client certificate, naming one of
`trusted_peers`, over mutual TLS; or by its service token, an entry of the tokens file
with `"service": true`), or a caller's own token; either way only the caller's tenants'
adapters serve. `--help` lists every setting (Kafka and S3: flags or MINT_* variables, as
`python -m deploy.local env` prints them).
"""

from __future__ import annotations

from mint import cli, settings, startup

from .settings import NodeSettings

MiB = 1024 * 1024


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m services.inference", __doc__)
    settings.add_flags(parser, NodeSettings)
    config = settings.load(NodeSettings, parser.parse_args())
    cli.configure(config)
    tokens = startup.load_tokens(config.tokens_file)  # local first: no waiting on servers
    startup.require_tls(config.tls_files())
    startup.require_base_dir(config.base_dir)
    startup.require_kafka(config, config.startup_timeout_s)
    startup.require_s3(config, config.projection_bucket, config.startup_timeout_s)
    # Only now torch and the model code (seconds of imports): every check above is quick.
    from mint.serving.device import resolve

    from .app import NodeConfig, NodeProcess

    try:
        home = resolve(config.device, config.dtype)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    kafka, topics = config.kafka(), config.residency_topics()
    topics.create(kafka)  # idempotent
    responses = config.responses()
    if responses is not None:
        responses.create(kafka)
    node = NodeProcess(
        NodeConfig(
            name=config.name,
            kafka=kafka,
            s3=config.s3(),
            tokens=tokens,
            bucket=config.projection_bucket,
            prefix=config.projection_prefix,
            topics=topics,
            host=config.host,
            port=config.port,
            advertise_host=config.advertise_host,
            base_dir=config.base_dir,
            base_seed=config.base_seed,
            targets=tuple(config.targets.split(",")),
            home=home,
            slots=config.slots,
            max_rank=config.max_rank,
            rank_classes=config.rank_classes,
            lora_kernel=config.lora_kernel,
            decode_graphs=config.decode_graphs,
            budget_bytes=int(config.budget_mib * MiB),
            host_budget_bytes=int(config.host_budget_mib * MiB),
            host_reserve_bytes=int(config.host_reserve_mib * MiB),
            max_prompt_tokens=config.max_prompt_tokens,
            batch_window_ms=config.batch_window_ms,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            step_tokens=config.step_tokens,
            metrics_port=config.metrics_port or None,
            disk_cache_dir=config.disk_cache_dir,
            disk_budget_bytes=int(config.disk_cache_mib * MiB),
            tls=config.tls_files(),
            trusted_peers=frozenset(p for p in config.trusted_peers.split(",") if p),
            health_port=config.health_port,
            drain_s=config.drain_s,
            responses=responses,
        )
    )
    print(f"node {config.name} serving on {node.address}", flush=True)
    stop = cli.stop_on_signals()
    stop.wait()
    node.stop(config.grace_s)


if __name__ == "__main__":
    main()
