"""Restore client tools: read a backup, rebuild pages at a point in time, install them
into a fleet; manual snapshots; a backup's window and storage metrics."""
