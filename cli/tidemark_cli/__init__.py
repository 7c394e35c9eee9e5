"""Tidemark cli component."""
