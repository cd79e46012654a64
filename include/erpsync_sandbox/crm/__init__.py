"""Sandbox CRM: a Salesforce REST API (v60.0) emulation over the sandbox's CRM store.

``erpsync_sandbox.crm.app.create_app(ctx)`` builds the FastAPI app; see :mod:`.app` for the
endpoints and the choices made where Salesforce's behaviour is not documented.
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_rest.htm
"""
