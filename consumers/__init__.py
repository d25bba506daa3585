"""The consumer worker and its steps: decode, window, dedup, sinks, dead letters, commit."""
