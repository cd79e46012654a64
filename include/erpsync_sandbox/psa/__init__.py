"""Sandbox PSA: a local service emulating Harvest API v2 (https://help.getharvest.com/api-v2/).

``create_app(ctx)`` in :mod:`erpsync_sandbox.psa.app` builds the FastAPI app.
"""
