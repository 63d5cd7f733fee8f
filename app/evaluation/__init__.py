"""Evaluation: an event's candidate triggers decided by the domain engine, and the outcome written."""
