"""Resource strings shared by all backends: wall time and memory, validated with one-line errors."""

from __future__ import annotations

import re

from sbt_batch.common.errors import UserError

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)


def parse_time(text: str | None) -> int | None:
    """Slurm-style time (MIN, MIN:SEC, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds; UserError if malformed."""
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    m = _TIME_RE.match(text)
    if not m:
        raise UserError(f"--time: {text!r} is not a time (use MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = (nums + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(nums) == 1:
        seconds = nums[0] * 60
    elif len(nums) == 2:
        seconds = nums[0] * 60 + nums[1]
    else:
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if seconds <= 0:
        raise UserError(f"--time: {text!r} must be longer than zero")
    return seconds


def format_slurm_time(seconds: int) -> str:
    """Seconds -> D-HH:MM:SS (or MINUTES when whole minutes below an hour, as Slurm prints them)."""
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def parse_mem(text: str | None) -> int | None:
    """Memory such as 2000, 2000M, 4G, 4GB -> megabytes; UserError if malformed."""
    if text is None or str(text).strip() == "":
        return None
    m = _MEM_RE.match(str(text).strip())
    if not m:
        raise UserError(f"--mem: {text!r} is not a memory size (use e.g. 4000M or 4G)")
    value, unit = float(m.group(1)), m.group(2).upper() or "M"
    mb = value * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mb < 1:
        raise UserError(f"--mem: {text!r} is less than 1 MB")
    return int(round(mb))


def check_count(value: int | None, option: str, minimum: int = 0) -> int | None:
    """Validate a count option such as --cpus or --gpus."""
    if value is not None and value < minimum:
        raise UserError(f"{option}: must be at least {minimum}, got {value}")
    return value
