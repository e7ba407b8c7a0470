"""Batch builds: a folder of subject folders becomes one avatar each (`lca-avatar batch`).

`subjects` finds the subjects and fingerprints their inputs, `jobs` turns each into a
self-contained `lca-avatar build` command line, `executors` runs those command lines (local
processes now; a cluster scheduler can take the same command lines), `runner` drives a batch to
its end and `report` keeps what happened in `batch_report.json`. Standard library only: the engine
runs batches, and the Blender add-on starts them and reads their reports.
"""
