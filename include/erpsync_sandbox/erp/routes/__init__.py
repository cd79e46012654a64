"""The Business Central routes of the ERP sandbox, one module per resource group.

Each module holds an ``APIRouter`` (``router``); :func:`erpsync_sandbox.erp.app.create_app`
includes them in the order of :data:`erpsync_sandbox.erp.app.ROUTERS`. The routes reach the
app's :class:`~erpsync_sandbox.erp.service.ErpService`, token issuer and limiter through the
dependencies in :mod:`.base` (``app.state``), never through closures.
"""
