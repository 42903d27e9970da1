"""Engine API handlers: events (being written)."""
