"""The router's OpenAI-compatible HTTP API: schema, chat template, replies, errors, app,
server."""
