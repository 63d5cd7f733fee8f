"""Every worker's catalogs of definitions and the reader that fills them from their topics."""
