"""ferry's wire protocol: `spec` defines it, `codec` encodes and decodes it, `gen` writes the C header."""
