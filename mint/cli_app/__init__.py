"""The `mint` command: MinT's registry and router from a terminal (typer + rich).

    mint login --registry 127.0.0.1:50051 --router 127.0.0.1:50060
    mint adapter create acme/tone --base <fingerprint>
    mint adapter publish acme/tone ./my-lora
    mint adapter promote acme/tone stable 1
    mint generate "Hello" --adapter acme/tone@stable

Not `mint.cli`, which holds the services' shared argparse helpers.
"""

from .main import app, main

__all__ = ["app", "main"]
