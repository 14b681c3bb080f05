"""CLI commands: kinematics (placeholder; commands are registered on sbt_batch.cli.app.app)."""

from __future__ import annotations

from sbt_batch.cli.app import app  # noqa: F401
