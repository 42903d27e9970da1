"""Engine API handlers: volumes (being written)."""
