"""One module per scheduler: ``local``, ``slurm``, ``condor`` (and ``condor_parallel``, its multi-node universe).

Each module defines a :class:`~sbt_batch.batch.backend.Backend` subclass; the registry in
:mod:`sbt_batch.batch.backend` names them, so adding a scheduler is one file plus one line there.
"""

__all__ = ["condor", "condor_parallel", "local", "slurm"]
