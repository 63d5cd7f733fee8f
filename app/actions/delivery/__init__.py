"""Action results over HTTP: the client (address checks, retries) and the dispatcher bounding what is in flight."""
