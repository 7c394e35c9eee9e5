"""Continuous backup to object storage and point-in-time restore (see docs/backup.md)."""
