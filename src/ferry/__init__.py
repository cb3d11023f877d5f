"""ferry: run unmodified programs with their file I/O carried to other machines."""
