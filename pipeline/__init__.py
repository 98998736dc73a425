"""Dataset-build pipeline for face anti-spoofing: index dataset copies, build the demo corpus, and
(in later stages) turn videos into sharded HDF5 training caches with manifests."""
