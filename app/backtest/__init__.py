"""Backtests: a trigger decided over the events already on the source topics (app/backtest/runner.py)."""
