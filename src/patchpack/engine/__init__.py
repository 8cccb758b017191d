"""The engine: where the work runs and the output folder's life, code that decides no byte.

:mod:`~patchpack.engine.executors` runs a plan's independent tasks in this process, in a local
process pool or on a Dask cluster, and hands results back in submission order;
:mod:`~patchpack.engine.output` keeps the output folder whole: one writer at a time, a crash-safe
swap, recovery after a crash, and readers told when a dataset changed under them. Neither can
change a dataset's bytes, so neither sits in ``dataset/`` (whose code invalidates staged shards and
DVC's extract stage when it changes). It imports nothing from the wings: any of them may use it.
"""
