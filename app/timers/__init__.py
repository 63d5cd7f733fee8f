"""Durable timers: pending firings in a changelogged table, due in event time while a backlog
is read and in the worker's clock when live (docs/timers.md)."""
