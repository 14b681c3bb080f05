"""Pytest fixtures for the local condor service (filled in by the batch work)."""
