"""The near-duplicate index over PDQ soft bindings (multi-index hashing)."""
