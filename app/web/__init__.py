"""The worker's web pages: the HTTP API (events, outcomes, definitions, dry runs, metrics) and /health."""
