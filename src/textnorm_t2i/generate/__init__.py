"""The embedded text-to-image generator: its pipeline, training, loading and image grids."""
