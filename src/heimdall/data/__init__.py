"""Sessions: the in-memory batch, the sharded store and interchange formats."""
