"""Benchmarks (not tests): each module is one command that prints a table and a JSON line.

Every figure is a ratio against a baseline or bound measured in the same run (this machine is
noisy). Results and commands are recorded in BENCHMARKS.md.
"""
