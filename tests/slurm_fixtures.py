"""Pytest fixtures for the local slurm service (filled in by the batch work)."""
