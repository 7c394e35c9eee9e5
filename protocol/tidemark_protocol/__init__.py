"""Tidemark protocol component."""
