"""The batch layer: runs of sbt-batch command lines on the local machine, Slurm or HTCondor.

It runs command lines, never Python calls into training or conversion, and imports neither
:mod:`sbt_batch.convert` nor :mod:`sbt_batch.cnn` (tests/test_layout.py checks it).

Modules: ``run`` (run directory + manifest), ``backend`` (the Backend interface and the registry of
``backends/``: local, slurm, condor, condor_parallel), ``task`` (the wrapper every job runs),
``core`` (submit/status/resubmit/cancel), ``submit`` (options, site profile, a new run), ``kinds``
(the task lists of each command), ``ranks`` (multi-rank training jobs), ``profiles`` and ``sites/``
(packaged site defaults and example profiles, overridden by ``~/.config/sbt-batch/``), ``render``
(Jinja2 job scripts with shlex-quoted values), ``resources`` (time/memory strings), ``proxy``
(X.509 grid proxies), ``show`` (status tables) and ``collect`` (collectors named "module:function").
Nothing here imports numpy, h5py or TensorFlow at module level.
"""

__all__ = ["backend", "backends", "collect", "core", "kinds", "profiles", "proxy", "ranks", "render", "resources", "run",
           "show", "submit", "task"]
