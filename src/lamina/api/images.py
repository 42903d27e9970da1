"""Engine API handlers: images (being written)."""
