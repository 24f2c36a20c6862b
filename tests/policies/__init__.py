"""Policy tests: builders, hand-worked cases per policy kind, invariants over the registry."""
