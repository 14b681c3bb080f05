"""sbt-batch: containerized HPC batch toolkit for particle-physics machine learning."""

__version__ = "0.1.0"
