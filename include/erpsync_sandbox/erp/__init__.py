"""Business Central API v2.0 emulation for the erpsync sandbox (see app.py)."""
