"""Benchmark problems with known answers."""
