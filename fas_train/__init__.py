"""Trainer for domain-generalized face anti-spoofing on the pipeline's HDF5 shards.

Data: :mod:`~fas_train.data` (shard datasets, clips), :mod:`~fas_train.sampler` (per-domain, per-class balanced
batches), :mod:`~fas_train.protocols` (which samples train, select and test). Methods and their networks:
:mod:`~fas_train.methods` (one class per method, ``update(batch)``), :mod:`~fas_train.models`. A run:
:mod:`~fas_train.settings`, :mod:`~fas_train.inputs`, :mod:`~fas_train.runtime`, :mod:`~fas_train.train` (the
loop), :mod:`~fas_train.selection`, :mod:`~fas_train.checkpoint`, :mod:`~fas_train.metrics_log`,
:mod:`~fas_train.evaluation`. Results: :mod:`~fas_train.metrics`, :mod:`~fas_train.plots`,
:mod:`~fas_train.collect`, :mod:`~fas_train.table`, :mod:`~fas_train.sweep`. Using a trained model:
:mod:`~fas_train.export`, :mod:`~fas_train.predict`. Command line: :mod:`~fas_train.cli` (``fas-train``).
"""
