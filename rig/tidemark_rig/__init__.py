"""Tidemark rig component."""
