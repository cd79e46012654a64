"""Write-back: the outbox (``outbox.py``), the relay that sends it (``relay.py``) and the
per-operation payload builders and lookups (``targets.py``)."""
