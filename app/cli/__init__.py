"""Operator commands, run as `faust -A app.main <command>`."""
