"""The CLI skeleton: help, version, one-line errors."""

from __future__ import annotations

from sbt_batch import __version__


def test_version(sbt):
    result = sbt("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_commands(sbt):
    result = sbt("--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_unknown_command_is_usage_error(sbt):
    result = sbt("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
