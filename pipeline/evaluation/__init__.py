"""Evaluation: generation and scoring (evaluate), protocols, and the statistics of its numbers (stats)."""
