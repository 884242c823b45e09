"""Benchmarks for `make bench`. Not collected by pytest; each figure is measured side by side in one run."""
