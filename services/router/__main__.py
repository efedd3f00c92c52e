"""Run the router, the front door for `mint.v1.Inference`.

  python -m services.router --tokens-file tokens.json --secrets-dir secrets/ [--port 50060]

Callers authenticate with `authorization: Bearer <token>` (the registry's tokens file
format) and may use the adapters of their tenants. Each request goes to a node where all
its adapters are resident, with the caller it is for and the router's credential: its
certificate over mutual TLS (tls_cert_file: nodes trust the name `mint-router`), or else
the service token (MINT_SERVICE_TOKEN, best as a file in the secrets directory; the
nodes' tokens file lists its digest with `"service": true`). On a miss the router asks
the controller for placement and waits within the request's deadline. The same
requests, with the same tokens, are served as OpenAI's HTTP API on --http-port (8080:
/v1/completions, /v1/chat/completions, /v1/models). `--help` lists every setting.
"""

from __future__ import annotations

from mint import cli, settings, startup

from .settings import RouterSettings


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m services.router", __doc__)
    settings.add_flags(parser, RouterSettings)
    config = settings.load(RouterSettings, parser.parse_args())
    cli.configure(config)
    tokens = startup.load_tokens(config.tokens_file)  # local files first
    startup.require_tls(config.tls_files())
    startup.require_kafka(config, config.startup_timeout_s)
    startup.require_s3(config, config.projection_bucket, config.startup_timeout_s)
    from .app import RouterConfig, RouterProcess  # transformers: seconds, after the checks

    kafka, topics = config.kafka(), config.residency_topics()
    topics.create(kafka)
    router = RouterProcess(
        RouterConfig(
            name=config.name,
            kafka=kafka,
            s3=config.s3(),
            tokens=tokens,
            service_token=(config.service_token.get_secret_value() if config.service_token else ""),
            bucket=config.projection_bucket,
            prefix=config.projection_prefix,
            topics=topics,
            address=f"{config.host}:{config.port}",
            silence_s=config.silence_s,
            cold_start_s=config.cold_start_s,
            metrics_port=config.metrics_port or None,
            tls=config.tls_files(),
            node_server_name=config.node_server_name,
            health_port=config.health_port,
            drain_s=config.drain_s,
            http_address=f"{config.host}:{config.http_port}" if config.http_port else None,
        )
    )
    print(f"router serving on {config.host}:{router.port}", flush=True)
    if router.http is not None:
        print(f"OpenAI-compatible HTTP API on {config.host}:{router.http.port}/v1", flush=True)
    stop = cli.stop_on_signals()
    stop.wait()
    router.stop(config.grace_s)


if __name__ == "__main__":
    main()
