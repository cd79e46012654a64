"""``airflow_settings.yaml``: the pack's connections, pools and variables, in the Astro CLI schema.

The file is validated whole before anything is written: a malformed entry is reported with its
position, id and field (``airflow.connections[1] (conn_id 'erpsync_psa'): conn_port: ...``) and
nothing is applied. Applying is one metadata-database transaction that creates what is missing,
updates what differs and leaves equal entries untouched, so applying twice changes nothing.
Schema reference: astronomer/astro-cli ``settings/types.go``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from erpsync.connectors.ids import SYSTEM_CONN_IDS

if TYPE_CHECKING:
    from airflow.models.connection import Connection


class SettingsError(ValueError):
    """The settings file cannot be applied; the message names the entry and field at fault."""


#: Airflow Variable: after an ERP invoice posts, also make Harvest show its time and expenses as
#: invoiced, through a Harvest invoice that imports exactly them (``on``, the default), or keep
#: the billed state in erpsync's ledger only (``off``). See docs/billed-state.md and
#: :mod:`erpsync.invoicing.push_psa`.
HARVEST_INVOICE_MIRROR = "erpsync_harvest_invoice_mirror"
HARVEST_INVOICE_MIRROR_DEFAULT = "on"


def harvest_invoice_mirror(value: str | None) -> bool:
    """The :data:`HARVEST_INVOICE_MIRROR` Variable's value as a switch (unset = default on)."""
    text = (value if value is not None else HARVEST_INVOICE_MIRROR_DEFAULT).strip().lower()
    if text in {"on", "true", "yes", "1"}:
        return True
    if text in {"off", "false", "no", "0"}:
        return False
    raise SettingsError(f"variable {HARVEST_INVOICE_MIRROR}={value!r}: use 'on' or 'off'")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ConnectionSpec(_Strict):
    conn_id: str = Field(min_length=1)
    conn_type: str = Field(min_length=1)
    conn_host: str | None = None
    conn_schema: str | None = None
    conn_login: str | None = None
    conn_password: str | None = None
    conn_port: int | None = None
    conn_uri: str | None = None
    conn_extra: dict[str, Any] | str | None = None

    @field_validator("conn_port", mode="before")
    @classmethod
    def _port_is_int(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer port number, got {value!r}")
        if not 0 < value < 65536:
            raise ValueError(f"must be between 1 and 65535, got {value}")
        return value

    @field_validator("conn_extra", mode="after")
    @classmethod
    def _extra_is_json_object(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a mapping or a JSON object string: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a mapping or a JSON object string")
            return parsed
        return value or {}


class PoolSpec(_Strict):
    pool_name: str = Field(min_length=1)
    pool_slot: int = Field(ge=0)
    pool_description: str = ""

    @field_validator("pool_slot", mode="before")
    @classmethod
    def _slot_is_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer number of slots, got {value!r}")
        return value


class VariableSpec(_Strict):
    variable_name: str = Field(min_length=1)
    variable_value: str

    @field_validator("variable_value", mode="before")
    @classmethod
    def _value_is_str(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"must be a string (quote it in YAML), got {value!r}")
        return value


class AirflowSection(_Strict):
    connections: list[ConnectionSpec] = []
    pools: list[PoolSpec] = []
    variables: list[VariableSpec] = []


class SettingsFile(_Strict):
    airflow: AirflowSection


_ID_FIELD = {"connections": "conn_id", "pools": "pool_name", "variables": "variable_name"}


def _describe(raw: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into ``airflow.connections[1] (conn_id 'x'): field``."""
    parts: list[str] = []
    entry_label = ""
    rest: list[str] = []
    node: Any = raw
    i = 0
    while i < len(loc):
        item = loc[i]
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]"
            kind = str(loc[i - 1])
            try:
                node = node[item]
            except (IndexError, KeyError, TypeError):
                node = None
            id_field = _ID_FIELD.get(kind)
            if id_field and isinstance(node, dict) and node.get(id_field):
                entry_label = f" ({id_field} {node[id_field]!r})"
            rest = [str(x) for x in loc[i + 1 :] if not isinstance(x, int)]
            break
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
        i += 1
    where = ".".join(parts) + entry_label
    return f"{where}: {'.'.join(rest)}" if rest else where


#: The system connections the sandbox (``erpsync sandbox serve``) stands in for, by service.
SANDBOX_CONNECTIONS: dict[str, str] = dict(SYSTEM_CONN_IDS)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def sandbox_port_variable(service: str) -> str:
    """The environment variable that moves a sandbox service (``ERPSYNC_SANDBOX_PSA_PORT``): the
    sandbox serves on it and its connection here points at it (the sandbox CLI reads it too)."""
    return f"ERPSYNC_SANDBOX_{service.upper()}_PORT"


def _sandbox_connection(spec: ConnectionSpec) -> str | None:
    """The sandbox service a connection points at (a system connection on this machine)."""
    for service, conn_id in SANDBOX_CONNECTIONS.items():
        if spec.conn_id == conn_id and (spec.conn_host or "") in _LOOPBACK and not spec.conn_uri:
            return service
    return None


def _move_sandbox_ports(path: Path, settings: SettingsFile, env: Mapping[str, str]) -> None:
    """Point the sandbox connections at ``ERPSYNC_SANDBOX_<SERVICE>_PORT`` where it is set."""
    for spec in settings.airflow.connections:
        service = _sandbox_connection(spec)
        variable = sandbox_port_variable(service) if service else ""
        value = env.get(variable, "").strip() if service else ""
        if not value:
            continue
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise SettingsError(
                f"{path}: connection {spec.conn_id}: {variable}={value!r} is not a port number "
                "(1-65535); nothing applied"
            )
        spec.conn_port = int(value)


def sandbox_ports(settings: SettingsFile) -> dict[str, int]:
    """The ports the sandbox connections point at (after ``ERPSYNC_SANDBOX_*_PORT``), by
    service: where ``make demo`` serves the sandbox. A connection pointed elsewhere (a real
    tenant) is left out."""
    ports: dict[str, int] = {}
    for spec in settings.airflow.connections:
        service = _sandbox_connection(spec)
        if service and spec.conn_port:
            ports[service] = spec.conn_port
    return ports


def load(path: Path, env: Mapping[str, str] | None = None) -> SettingsFile:
    """Parse and validate the whole file, or raise SettingsError naming every fault.

    The sandbox connections' ports follow ``ERPSYNC_SANDBOX_<SERVICE>_PORT`` when set (from
    ``env``, default the process environment), so a moved sandbox and its connections agree."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping with an 'airflow' key at the top")
    try:
        settings = SettingsFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"  {_describe(raw, tuple(err['loc']))}: {msg}")
        raise SettingsError(
            f"{path}: invalid settings, nothing applied:\n" + "\n".join(problems)
        ) from None
    _check_unique(path, settings)
    _move_sandbox_ports(path, settings, os.environ if env is None else env)
    return settings


def _check_unique(path: Path, settings: SettingsFile) -> None:
    for kind, id_field in _ID_FIELD.items():
        seen: dict[str, int] = {}
        for index, entry in enumerate(getattr(settings.airflow, kind)):
            key = getattr(entry, id_field)
            if key in seen:
                raise SettingsError(
                    f"{path}: invalid settings, nothing applied:\n  airflow.{kind}[{index}] "
                    f"({id_field} {key!r}): {id_field}: duplicates airflow.{kind}[{seen[key]}]"
                )
            seen[key] = index


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.created) + len(self.updated)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
            + (f" (created: {', '.join(self.created)})" if self.created else "")
            + (f" (updated: {', '.join(self.updated)})" if self.updated else "")
        )


def _connection_fields(spec: ConnectionSpec) -> dict[str, Any]:
    if spec.conn_uri:
        from airflow.models.connection import Connection

        parsed = Connection(conn_id=spec.conn_id, uri=spec.conn_uri)
        return {
            "conn_type": parsed.conn_type,
            "host": parsed.host,
            "schema": parsed.schema,
            "login": parsed.login,
            "password": parsed.password,
            "port": parsed.port,
            "extra": parsed.extra_dejson or {},
        }
    return {
        "conn_type": spec.conn_type,
        "host": spec.conn_host or None,
        "schema": spec.conn_schema or None,
        "login": spec.conn_login or None,
        "password": spec.conn_password or None,
        "port": spec.conn_port,
        "extra": spec.conn_extra or {},
    }


def apply(settings: SettingsFile) -> ApplyReport:
    """Apply validated settings to the Airflow metadata database in one transaction."""
    # The metadata-database models, on purpose: applying settings is an admin write to the
    # metadata database, like `airflow connections import`, not task code.
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    report = ApplyReport()
    with create_session() as session:  # commits at the end, rolls back on any error
        for spec in settings.airflow.connections:
            wanted = _connection_fields(spec)
            label = f"connection {spec.conn_id}"
            conn = (
                session.query(Connection).filter(Connection.conn_id == spec.conn_id).one_or_none()
            )
            if conn is None:
                conn = Connection(conn_id=spec.conn_id)
                _set_connection(conn, wanted)
                session.add(conn)
                report.created.append(label)
            elif _connection_state(conn) != wanted:
                _set_connection(conn, wanted)
                report.updated.append(label)
            else:
                report.unchanged.append(label)
        for pool_spec in settings.airflow.pools:
            label = f"pool {pool_spec.pool_name}"
            pool = session.query(Pool).filter(Pool.pool == pool_spec.pool_name).one_or_none()
            if pool is None:
                session.add(
                    Pool(
                        pool=pool_spec.pool_name,
                        slots=pool_spec.pool_slot,
                        description=pool_spec.pool_description,
                        include_deferred=False,
                    )
                )
                report.created.append(label)
            elif (pool.slots, pool.description or "") != (
                pool_spec.pool_slot,
                pool_spec.pool_description,
            ):
                pool.slots = pool_spec.pool_slot
                pool.description = pool_spec.pool_description
                report.updated.append(label)
            else:
                report.unchanged.append(label)
        for var_spec in settings.airflow.variables:
            label = f"variable {var_spec.variable_name}"
            var = (
                session.query(Variable).filter(Variable.key == var_spec.variable_name).one_or_none()
            )
            if var is None:
                session.add(Variable(key=var_spec.variable_name, val=var_spec.variable_value))
                report.created.append(label)
            elif var.val != var_spec.variable_value:
                var.set_val(var_spec.variable_value)
                report.updated.append(label)
            else:
                report.unchanged.append(label)
    return report


def _connection_state(conn: Connection) -> dict[str, Any]:
    return {
        "conn_type": conn.conn_type,
        "host": conn.host or None,
        "schema": conn.schema or None,
        "login": conn.login or None,
        "password": conn.password or None,
        "port": conn.port,
        "extra": conn.extra_dejson or {},
    }


def _set_connection(conn: Connection, wanted: dict[str, Any]) -> None:
    conn.conn_type = wanted["conn_type"]
    conn.host = wanted["host"]
    conn.schema = wanted["schema"]
    conn.login = wanted["login"]
    conn.password = wanted["password"]
    conn.port = wanted["port"]
    conn.extra = json.dumps(wanted["extra"], sort_keys=True) if wanted["extra"] else None
