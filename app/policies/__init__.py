"""Contact policies and trigger limits, applied to firings before they are emitted."""
