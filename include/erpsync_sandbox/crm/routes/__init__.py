"""The Salesforce REST routes of the CRM sandbox, one module per resource group.

Each module holds an ``APIRouter`` (``router``); :func:`erpsync_sandbox.crm.app.create_app`
includes them in the order of :data:`erpsync_sandbox.crm.app.ROUTERS`. The routes reach the
service's store, settings, quota, sessions and query cursors through
:class:`.base.CrmState` (``app.state.crm``), never through closures.
"""
