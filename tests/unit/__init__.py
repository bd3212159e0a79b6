"""Fast tests: one process, no Ray cluster, no servers."""
