"""The one rule for what is a secret, and how text and records are made safe to show.

Three places need it: the connectors (which values of an Airflow connection to register with
the log masker), the write-back relay and every task that stores an error text (what to cut out
of a message before it is kept), and the finance console (which fields of a payload to mask on a
page). They all ask this module, so a name that is secret in one place is secret everywhere.

**Secret names.** A name is secret when it contains one of :data:`SECRET_NAME_WORDS`:
Airflow's own list of sensitive field names (``DEFAULT_SENSITIVE_FIELDS`` in
``airflow/_shared/secrets_masker/secrets_masker.py``, the defaults of
``[core] sensitive_var_conn_names``) plus ``credential`` and ``cookie``. A name that says
*where* a secret lives rather than holding it (``token_url``, ``private_key_path``,
``auth_type``) is not secret: :data:`LOCATION_SUFFIXES`.

**Text.** :func:`scrub` replaces known secret values, whatever Airflow's masker knows,
``Bearer``/``Basic`` credentials and ``<secret name>=<value>`` fragments, and bounds the text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "LOCATION_SUFFIXES",
    "MASK",
    "SECRET_NAME_WORDS",
    "is_secret_name",
    "mask_values",
    "scrub",
]

log = logging.getLogger(__name__)

#: Airflow 3.3's DEFAULT_SENSITIVE_FIELDS (those that name a credential) plus two of ours.
SECRET_NAME_WORDS: tuple[str, ...] = (
    "access_key",
    "access_token",
    "api_key",
    "apikey",
    "auth_header",
    "authorization",
    "bearer",
    "connection_string",
    "keyfile_dict",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "service_account",
    "service_key",
    "token",
    # ours: OAuth client credentials and browser sessions
    "credential",
    "cookie",
)
#: A name ending so says where a secret lives (a URL, a file, a kind), not the secret.
LOCATION_SUFFIXES: tuple[str, ...] = ("_path", "_url", "_uri", "_endpoint", "_type")
#: What a masked value is shown as.
MASK = "***"
#: Text longer than this is cut when scrubbed (error texts are stored and shown).
MAX_TEXT = 2000
#: Values shorter than this are not treated as secrets (they would mask ordinary words).
MIN_SECRET_LEN = 4

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;&]+")
_NAME_EQUALS_VALUE = re.compile(
    r"(?i)((?<![\w-])[\w-]*(?:"
    + "|".join(re.escape(w).replace("_", "[_-]?") for w in SECRET_NAME_WORDS)
    + r")[\w-]*[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)


def is_secret_name(name: object) -> bool:
    """Whether a field, extra or header called ``name`` holds a secret."""
    low = str(name).lower().replace("-", "_")
    if low.endswith(LOCATION_SUFFIXES):
        return False
    return any(word in low for word in SECRET_NAME_WORDS)


def mask_values(value: Any, mask: str = MASK) -> Any:
    """``value`` with every non-empty value under a secret name replaced by ``mask``, recursively
    through mappings and lists (the value's shape is kept, so a page can still show it)."""
    if isinstance(value, Mapping):
        return {
            k: mask if is_secret_name(k) and v not in (None, "") else mask_values(v, mask)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_values(v, mask) for v in value]
    return value


def scrub(text: object, known_secrets: Iterable[str] = ()) -> str:
    """Text safe to store or log: ``known_secrets`` and the secrets Airflow's masker holds
    replaced, credential-looking fragments cut, at most :data:`MAX_TEXT` characters."""
    out = str(text)
    for secret in known_secrets:
        if secret and len(secret) >= MIN_SECRET_LEN:
            out = out.replace(secret, MASK)
    # our own patterns first: Airflow's masker may already have replaced part of a name
    # (``client_***=value`` once some value "secret" is registered) and hide it from them
    out = _BEARER.sub(lambda m: m.group(1) + " " + MASK, out)
    out = _NAME_EQUALS_VALUE.sub(lambda m: m.group(1) + MASK, out)
    try:
        from airflow.sdk.log import redact

        out = str(redact(out))
    except Exception:  # noqa: BLE001 - the masker is a best effort on top of our own scrub
        log.debug("airflow secrets masker unavailable; own scrub only")
    return out[:MAX_TEXT]
