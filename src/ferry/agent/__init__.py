"""The agent: serves shims, routes paths to nodes, owns the cache replica."""
