"""What every console page uses: the request's user and permissions, the warehouse, templates,
CSV downloads and links to records in the source systems.

A page is an ``APIRouter`` in :mod:`erpsync.console.pages`; its routes take ``ctx: Ctx`` and call
one or a few named functions of their page module with ``ctx.warehouse()``'s connection::

    @router.get("/things", response_class=HTMLResponse)
    def things(request: Request, ctx: Ctx):
        with ctx.warehouse() as conn:
            rows = list_things(conn)
        return render(request, ctx, "things.html", rows=rows)

State-changing routes are POSTs with a JSON body, guarded by ``dependencies=[require(Action.X)]``;
the app refuses cross-site requests before any route runs (:mod:`erpsync.console.app`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from erpsync.connectors.ids import CRM_CONN_ID, ERP_CONN_ID, PSA_CONN_ID
from erpsync.console import PAGES
from erpsync.console.permissions import Action, allowed_actions

if TYPE_CHECKING:
    import psycopg
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.models.connection import Connection
    from psycopg.rows import TupleRow
    from sqlalchemy.orm import Session

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def money(value: Decimal | None, places: int = 2) -> str:
    """A money amount as finance reads it: thousands separators, ``places`` decimals (the
    amount is rounded half-even for display only; stored amounts are never rounded here)."""
    if value is None:
        return ""
    return f"{Decimal(value).quantize(Decimal(1).scaleb(-places)):,}"


templates.env.filters["money"] = money

# --- links into the source systems ------------------------------------------------------------


@dataclass(frozen=True)
class SourceLinks:
    """Web addresses of records in the CRM, PSA and ERP, from the Airflow connections' hosts.

    Only URL forms the vendors document are built, and only for a connection that points at the
    vendor itself (the sandbox serves APIs, not the vendors' web pages):

    - Salesforce Lightning record pages ``https://<My Domain>/lightning/r/<sObject>/<id>/view``
      ("Lightning Experience URL format", https://help.salesforce.com/s/articleView?id=000386237).
    - Business Central web client ``https://businesscentral.dynamics.com/<tenant>/<environment>/
      ?company=...&page=<page id>&filter=...`` ("Web client URLs",
      https://learn.microsoft.com/dynamics365/business-central/dev-itpro/developer/devenv-web-client-urls).
    - Harvest documents no per-record web address; with the connection extra ``web_url`` (the
      company's ``base_uri`` from ``GET /v2/company``,
      https://help.getharvest.com/api-v2/company-api/company/company/) a project links to its page.
    """

    crm_base: str | None = None
    psa_base: str | None = None
    erp_base: str | None = None
    erp_company: str | None = None

    #: BC page ids: Customer Card, Sales Invoice, Posted Sales Invoice
    ERP_PAGES = {"customer": 21, "sales_invoice": 43, "posted_sales_invoice": 132}

    def crm(self, sobject: str, record_id: str | None) -> str | None:
        if not self.crm_base or not record_id:
            return None
        return f"{self.crm_base}/lightning/r/{quote(sobject)}/{quote(str(record_id))}/view"

    def psa(self, kind: str, record_id: str | None) -> str | None:
        if not self.psa_base or not record_id or kind != "project":
            return None
        return f"{self.psa_base}/projects/{quote(str(record_id))}"

    def erp(self, kind: str, number: str | None) -> str | None:
        page = self.ERP_PAGES.get(kind)
        if not self.erp_base or not number or page is None:
            return None
        params = f"page={page}&filter=%27No.%27%20IS%20%27{quote(str(number))}%27"
        if self.erp_company:
            params = f"company={quote(self.erp_company)}&{params}"
        return f"{self.erp_base}/?{params}"

    @classmethod
    def from_airflow(cls) -> SourceLinks:
        """Read the pack's three connections (hosts and extras only; never a secret)."""
        from airflow.models.connection import Connection

        def get(conn_id: str) -> Connection | None:
            try:
                return Connection.get_connection_from_secrets(conn_id)
            except Exception:  # noqa: BLE001 - an absent connection just means no links
                return None

        crm = get(CRM_CONN_ID)
        psa = get(PSA_CONN_ID)
        erp = get(ERP_CONN_ID)
        crm_base = None
        if crm is not None and crm.host and "salesforce.com" in crm.host:
            host = urlsplit(crm.host).netloc or crm.host
            crm_base = f"https://{host.rstrip('/')}"
        psa_base = None
        if psa is not None:
            web = (psa.extra_dejson or {}).get("web_url")
            if web and str(web).startswith("https://"):
                psa_base = str(web).rstrip("/")
        erp_base = erp_company = None
        if erp is not None and erp.host and "api.businesscentral.dynamics.com" in erp.host:
            extra = erp.extra_dejson or {}
            tenant, env = extra.get("tenant"), extra.get("environment")
            if tenant and env:
                erp_base = f"https://businesscentral.dynamics.com/{quote(tenant)}/{quote(env)}"
                erp_company = extra.get("company_name")
        return cls(crm_base=crm_base, psa_base=psa_base, erp_base=erp_base, erp_company=erp_company)


# --- the request context ----------------------------------------------------------------------


@dataclass
class ConsoleSettings:
    """Where the console's data lives; the plugin uses the defaults (Airflow's connection
    ``erpsync_warehouse`` and Airflow's own metadata database)."""

    warehouse_url: str | None = None
    links: SourceLinks | None = None
    _links_at: float = 0.0
    _links_cache: SourceLinks | None = field(default=None, repr=False)

    def source_links(self) -> SourceLinks:
        if self.links is not None:
            return self.links
        now = time.monotonic()
        if self._links_cache is None or now - self._links_at > 300:
            self._links_cache = SourceLinks.from_airflow()
            self._links_at = now
        return self._links_cache

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[psycopg.Connection[TupleRow]]:
        import psycopg

        if self.warehouse_url:
            conn = psycopg.connect(self.warehouse_url, application_name="erpsync-console")
        else:
            conn = psycopg.connect(**_warehouse_conninfo())
        with conn:  # commits on a clean exit, rolls back on an exception, then closes
            yield conn


def _warehouse_conninfo() -> dict[str, Any]:
    """libpq parameters of the warehouse connection, resolved as the API server resolves
    connections (secrets backends, environment, then the metadata database)."""
    from airflow.models.connection import Connection

    from erpsync.warehouse.connection import conn_id, libpq_params

    return libpq_params(
        Connection.get_connection_from_secrets(conn_id()), application_name="erpsync-console"
    )


@dataclass
class ConsoleContext:
    """The current request's user, what they may do, and the console's data sources."""

    user: BaseUser
    user_name: str
    actions: frozenset[Action]
    base: str
    settings: ConsoleSettings

    def allowed(self, action: Action) -> bool:
        return action in self.actions

    @property
    def links(self) -> SourceLinks:
        return self.settings.source_links()

    def warehouse(self) -> contextlib.AbstractContextManager[psycopg.Connection[TupleRow]]:
        return self.settings.warehouse()

    @contextlib.contextmanager
    def airflow_session(self) -> Iterator[Session]:
        """A SQLAlchemy session on Airflow's metadata database (HITL records), read-only use."""
        from airflow.utils.session import create_session

        with create_session() as session:
            yield session


def user_display_name(user: Any) -> str:
    for getter in ("get_name", "get_id"):
        fn = getattr(user, getter, None)
        if fn is not None:
            value = fn()
            if value:
                return str(value)
    return "unknown"


async def console_context(request: Request) -> ConsoleContext:
    """Authenticate the caller with Airflow (401 without, 403 with a bad token) and check that
    they may read the console (403 otherwise)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    from erpsync.console.app import settings_of

    bearer = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        from fastapi.security import HTTPAuthorizationCredentials

        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:].strip())
    user = await get_user(request, None, bearer)
    actions = allowed_actions(user, get_auth_manager())
    if Action.READ not in actions:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: this user may not read erpsync")
    return ConsoleContext(
        user=user,
        user_name=user_display_name(user),
        actions=actions,
        base=request.scope.get("root_path", "").rstrip("/"),
        settings=settings_of(request),
    )


Ctx = Annotated[ConsoleContext, Depends(console_context)]


def require(action: Action) -> Any:
    """A route dependency: 403 unless the user may do ``action``."""

    def check(ctx: Ctx) -> None:
        if not ctx.allowed(action):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"Forbidden: your Airflow role does not allow '{action.value}' in erpsync",
            )

    return Depends(check)


# --- responses --------------------------------------------------------------------------------


def render(request: Request, ctx: ConsoleContext, template: str, **context: Any) -> HTMLResponse:
    """A page of the console (``template`` extends ``base.html``)."""
    return templates.TemplateResponse(
        request,
        template,
        {
            "ctx": ctx,
            "base": ctx.base,
            "user": ctx.user_name,
            "can": {a.value for a in ctx.actions},
            "pages": PAGES,
            "current": request.url.path.removeprefix(ctx.base) or "/",
            **context,
        },
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # a spreadsheet must not run a cell as a formula (CSV injection, OWASP)
        return "'" + value
    return value


def csv_response(
    filename: str, header: list[str], rows: Iterable[Sequence[Any]]
) -> StreamingResponse:
    """A CSV download, streamed (money as plain decimal text, never floats)."""

    def generate() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        for i, row in enumerate(rows, 1):
            writer.writerow([_csv_cell(v) for v in row])
            if i % 500 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    name = _SAFE_NAME.sub("_", filename).strip("_") or "export"
    if not name.endswith(".csv"):
        name += ".csv"
    return StreamingResponse(
        generate(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
