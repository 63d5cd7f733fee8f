"""Trigger engine: matches customer events against trigger rules and emits action commands."""
