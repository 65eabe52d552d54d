"""Analyzer worker: computes diffs and activation statistics on demand and caches them in the store."""
