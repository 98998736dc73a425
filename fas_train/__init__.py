"""Trainer for domain-generalized face anti-spoofing on the pipeline's HDF5 shards (not built yet)."""
