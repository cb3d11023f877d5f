"""Storage backends a node exports: `local.DirBackend` (a directory, confined beneath its
root) and `memory.MemoryBackend` (in-memory, for tests and scratch).  Both implement
`base.Backend`."""
