"""The batch layer: runs of sbt-batch command lines on the local machine, Slurm or HTCondor.

Modules: ``run`` (run directory + manifest), ``backend`` (the Backend interface and registry),
``task`` (the wrapper every job runs), ``core`` (submit/status/resubmit/cancel), ``local``,
``slurm`` (and ``condor``) backends, ``profiles`` (YAML site profiles), ``templates`` (Jinja2
job scripts with shlex-quoted values), ``resources`` (time/memory strings) and ``collect``.
Nothing here imports numpy, h5py or TensorFlow at module level.
"""
