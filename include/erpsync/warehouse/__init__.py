"""The erpsync warehouse: schemas ``raw``, ``core``, ``recon``, ``billing``, ``ops``, ``audit`` in
PostgreSQL, created by the versioned SQL migrations in ``migrations/``."""
