"""Experiments at the edges: the conversion tracker (open windows per customer) and the report reader."""
