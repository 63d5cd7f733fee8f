"""Typed access to the per-customer state in faust's changelogged tables."""
