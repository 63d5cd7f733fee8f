"""Scheduling: the leader's clock publishes due ticks; each partition runs a tick for its customers."""
