"""Delivery mechanics: outbound HTTP."""
