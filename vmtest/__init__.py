"""vmtest: QEMU-based full-system tests for Linux memory-management work."""

__version__ = "0.1.0"
