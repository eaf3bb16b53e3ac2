"""Paper-study tools."""
