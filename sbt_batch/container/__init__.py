"""Container images: build, push and locate them (``images``), and check one from inside (``selfcheck``)."""

__all__ = ["images", "selfcheck"]
