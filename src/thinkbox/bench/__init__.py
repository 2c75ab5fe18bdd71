"""Benchmarks: ``thinkbox bench sandbox | model | reasoning``."""
