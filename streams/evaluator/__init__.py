"""The platform's evaluator: scores new revisions of adapters whose gates require a
platform evaluation, on the suite's stored examples, and records the verdicts."""
