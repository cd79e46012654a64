"""The Harvest v2 routes of the PSA sandbox, one module per resource group.

Each module holds an ``APIRouter`` (``router``); :func:`erpsync_sandbox.psa.app.create_app`
includes them in the order of :data:`erpsync_sandbox.psa.app.ROUTERS`. The routes reach the
service's store, writer and rate limiter through :class:`.base.PsaState` (``app.state.psa``).
"""
