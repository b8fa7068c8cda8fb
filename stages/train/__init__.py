"""``train``: models learned from the artifacts on disk (UV generator of seed 001; more later)."""
