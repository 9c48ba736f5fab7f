"""Helpers that run real chain nodes (anvil for EVM) for tests and the demo. No Django needed."""
