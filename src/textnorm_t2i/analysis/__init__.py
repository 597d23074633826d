"""Analyses of rewards that other commands and the study share: the reward diagnosis, the misalignment table
and the TIA2-Shapes benchmark built from the embedded generator."""
