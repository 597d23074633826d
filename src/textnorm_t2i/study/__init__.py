"""The study: the TIA2-Shapes benchmark built from the embedded generator, and the misalignment table."""
