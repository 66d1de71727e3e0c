"""The study layer: a config becomes a plan of runs, and an executor runs the plan.

``plan`` (config -> runs: variants or sweep layouts or tuned rows x seeds) ->
``executors`` (in process, N processes, a Slurm array) -> the engine trains each run ->
``grid`` checks, locks and records the ablation folder around them; ``sweep`` holds the
built-in insertion-site layouts and ``tune`` the per-variant Optuna search.
"""
