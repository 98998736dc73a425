"""Dataset-build pipeline for face anti-spoofing: index dataset copies in their official layouts, then build a
sharded HDF5 training cache with manifests, as Luigi tasks whose per-video work runs on dask workers.

Sources: :mod:`~pipeline.index`, :mod:`~pipeline.identity`, :mod:`~pipeline.demo` (the generated corpus).
Per video: :mod:`~pipeline.frames`, :mod:`~pipeline.faces` (MTCNN), :mod:`~pipeline.depth` and
:mod:`~pipeline.face_mesh`, :mod:`~pipeline.channels`, :mod:`~pipeline.extract`. Outputs:
:mod:`~pipeline.shards`, :mod:`~pipeline.assemble`, :mod:`~pipeline.audit`, :mod:`~pipeline.compare`,
:mod:`~pipeline.preview`. Orchestration: :mod:`~pipeline.config`, :mod:`~pipeline.tasks`, :mod:`~pipeline.build`,
:mod:`~pipeline.cluster`. Command line: :mod:`~pipeline.cli` (``fas-pipeline``).
"""
