"""Benchmarks that print figures (`make bench`); not tests: nothing here asserts a time."""
