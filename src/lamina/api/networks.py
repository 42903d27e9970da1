"""Engine API handlers: networks (being written)."""
