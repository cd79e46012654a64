"""Helpers shared by several test modules (seeding data, not schema)."""
