"""The reconciliation as set-based SQL (PostgreSQL): one statement (``CLASSIFY``) classifies
every item of the shards it is given; recon.items is partitioned in ``SHARDS`` shards by
contract (migration 0015), so a large firm's shards are classified at once by parallel workers,
each on its own connection and core, all reading the run's exported snapshot
(:mod:`erpsync.reconcile`).

* **First reconciliation** (recon.items empty): each shard's partition is built whole - a new
  table filled by ``SHARD_FILL``, then its indexes and keys built once from the loaded rows
  (``SHARD_INDEXES``: a sort each, not 1,000,000+ random B-tree insertions and foreign-key
  checks) - and swapped in for the empty partition in the run's transaction (``SHARD_SWAP``).
* **Later runs**: only what differs from recon.items (a hash full join with IS DISTINCT FROM on
  every computed column, ``FILL_STAGE`` / ``SHARD_DIFF``) goes into the run's stage; three small
  statements apply it (update what changed, insert what is new, delete what vanished), so a
  rerun with no source change writes no row.

Performance notes (large firm: 1,050,016 time entries, 1,163,836 items; no temp spill with the
run's ``work_mem`` of 512MB): the classification is CPU-bound expression evaluation and hash
joins (INSERT ... SELECT never runs in parallel inside PostgreSQL 16 - hence the shards), so
the statements avoid per-row work the result does not need - each worker drops the other
shard's entries right after the one join that knows their contract, the contract's columns come
from the lookup they were found in (no second contracts join), the billed ledger is looked up
only for entries the PSA does not mark billed, the rate card only for the few entries without a
contract or PSA rate, ``period_start`` truncates a timestamp without time zone (no time-zone
conversion per row), the common non-billable details are jsonb constants, and duplicate
detection reads only the dates that can hold a duplicate.

Rules (module doc of :mod:`erpsync.reconcile` has the finance-facing version):

* **Contract of an item**: the version in effect on the item's date (migration 0023): among
  the usable versions (complete, adopted, pending, or superseded after being valid) whose
  ``psa_project_id`` is the item's PSA project, else (a contract not linked to a PSA project
  yet) whose ``project_code`` is the item's project code, the highest one whose
  ``effective_from`` (the change order's effective date) is on or before the date; the first
  one applies from the beginning. So a change order never re-prices work dated before it.
  The lookups hold one row per version and the days it covers (``eff_from`` included,
  ``eff_to`` excluded; exactly one row per day), joined on the project and the date.
* **T&M rate** on the entry's date: the contracted rate for the person (``rate_overrides`` of
  that contract version; an element's ``effective_from`` starts it, the person's next element
  ends it), else the PSA's rate on the entry (the assignment rate or the person's
  rate card that day, as Harvest stamps it), else the person's billable rate card effective on
  the entry's date in ``core.rate_cards`` (in the contract currency; Harvest rates carry no
  currency, so a card without one counts as the contract's). Each entry is priced on its own
  date, so a rate change mid-period splits the period's amount at the change.
* **Currency of a time entry**: Harvest's time entry names its client as ``{id, name}`` only,
  so an entry without a currency is in its client's currency: the PSA client's
  (``core.psa_clients``, synced from Harvest), else the CRM client linked to it in
  ``core.id_map``.
* **Caps** (hours or amount, per contract, cumulative in date order, then creation, then id):
  every billable T&M entry without an entry-level problem consumes the cap, billed ones
  included. An entry whose running total passes the cap is held ``over_cap`` in full; a
  straddling entry (part under, part over) is held whole, and its detail says how much of it
  still fits (``cap_remaining``), so a person can split it in the PSA.
* **Plausibility** (migration 0021, bounds in ``recon.settings`` read through ``cfg``): the
  per-person-per-day sum is one aggregate per run, over the days from the first unbilled
  billable T&M entry on (``unbilled_from``, shared with duplicate detection: earlier days are
  billed, nothing there can be held), kept only where over the bound (``day_over`` in
  ``CREATE_LOOKUPS``: a hashed lookup per entry, not a window over a million rows); the rate
  card band rides on the people lookup the entries join anyway (``people_x``, in EUR, scaled
  by the ratio bounds; the contract lookups carry their currency's FX); an entry with a
  plausibility problem is left out of its contract's cap running total, like a duplicate.
* **Precedence** (first wins; ``recon.reasons.precedence``): billed; then data problems
  (unknown_project, implausible_date, closed_project, outside_contract_dates, then
  non_billable, then hours_over_entry_limit, hours_over_day_limit, zero_amount,
  duplicate_entry, missing_rate, rate_off_card, missing_receipt, expense_over_policy,
  over_cap, currency_differs_from_contract, rate_differs_from_contract); then locked_period;
  then not_approved; else ready. Data problems come before not_approved, so a problem on a submitted
  entry is found before approval. Every data problem of an item is kept in ``problems``.
"""

from __future__ import annotations

# ruff: noqa: S608 - every statement here is assembled from constants; values are bound
from erpsync.models.billing_terms import milestone_item_key_sql

_CONTRACT_COLS = (
    "opportunity_id",
    "version",
    "account_id",
    "billing_model",
    "currency",
    "starts_on",
    "ends_on",
    "cap_type",
    "cap_value",
    "markup_pct",
    "per_eur",
)


def _pick(col: str) -> str:
    return f"CASE WHEN c1.opportunity_id IS NOT NULL THEN c1.{col} ELSE c2.{col} END AS c_{col}"


_PICK = ",\n       ".join(_pick(c) for c in _CONTRACT_COLS)

_CONTRACTS = """
cfg AS MATERIALIZED (
    SELECT s.lock_date, s.expense_markup_pct,
           s.receipt_threshold / tc.per_eur AS receipt_threshold_eur,
           -- plausibility bounds (migration 0021)
           s.max_hours_per_entry, s.max_hours_per_person_day, s.rate_ratio_min,
           s.rate_ratio_max, s.date_tolerance_days,
           %(as_of)s::date + s.date_tolerance_days AS latest_date
      FROM recon.settings s
      LEFT JOIN recon.currencies tc ON tc.code = s.receipt_threshold_currency
     WHERE s.id
)"""


#: The contract versions that can price an item (migration 0023): live ones, and ones a later
#: change order superseded after they were valid (they still price the days before it).
_USABLE = (
    "(c.status IN ('complete', 'adopted', 'pending')"
    " OR (c.status = 'superseded' AND c.problems = '[]'::jsonb))"
)

#: A contract lookup (``{key}``: the project it is found by): one row per usable version with
#: the days it is in effect, ``eff_from`` (included) to ``eff_to`` (excluded). A version applies
#: from its effective_from (the first one of the project from the beginning; one recorded
#: before migration 0023 has none and applies from the beginning too) until a higher version
#: takes effect: every day has exactly one row, that of the highest version already in effect.
_VERSION_PERIODS = (
    """
    SELECT psa_project_id, project_code, opportunity_id, version, account_id, billing_model,
           currency, starts_on, ends_on, cap_type, cap_value, shard, markup_pct, eff_from,
           coalesce(eff_to, 'infinity'::date) AS eff_to,
           -- the contract currency's FX (plausibility: rates against the rate card)
           (SELECT cur.per_eur FROM recon.currencies cur WHERE cur.code = r.currency) AS per_eur
      FROM (SELECT k.*, min(k.eff_from) OVER (
                   PARTITION BY k.{key} ORDER BY k.version DESC, k.opportunity_id DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS eff_to
              FROM (SELECT c.psa_project_id, c.project_code, c.opportunity_id, c.version,
                           c.account_id, c.billing_model, c.currency, c.starts_on, c.ends_on,
                           c.cap_type, c.cap_value,
                           ((hashtext(coalesce(c.opportunity_id, '')) & 2147483647) % 2)::smallint
                               AS shard,
                           CASE WHEN (c.payload ->> 'Expense_Markup_Pct__c')
                                     ~ '^[0-9]+(\\.[0-9]+)?$'
                                THEN (c.payload ->> 'Expense_Markup_Pct__c')::numeric
                           END AS markup_pct,
                           CASE WHEN row_number() OVER (PARTITION BY c.{key}
                                                        ORDER BY c.version, c.opportunity_id) = 1
                                THEN '-infinity'::date
                                ELSE coalesce(c.effective_from, '-infinity'::date)
                           END AS eff_from
                      FROM core.contracts c
                     WHERE """
    + _USABLE
    + """ AND c.{where}) k) r
     WHERE eff_to IS NULL OR eff_to > eff_from
;"""
)

#: Small lookups the fill joins, as analysed temp tables (dropped at commit) so the planner
#: hashes them, not the million time entries.
CREATE_LOOKUPS = (
    "DROP TABLE IF EXISTS pg_temp.ctr_id, pg_temp.ctr_code, pg_temp.ovr, pg_temp.card,"
    " pg_temp.billed_src, pg_temp.psa_cur, pg_temp.unbilled_from, pg_temp.day_over,"
    " pg_temp.people_x;"
    "CREATE TEMP TABLE ctr_id ON COMMIT DROP AS"
    + _VERSION_PERIODS.format(key="psa_project_id", where="psa_project_id IS NOT NULL")
    + "CREATE TEMP TABLE ctr_code ON COMMIT DROP AS"
    + _VERSION_PERIODS.format(key="project_code", where="psa_project_id IS NULL")
    + """CREATE TEMP TABLE ovr ON COMMIT DROP AS
    -- the contracted rate per version and person, with the days it covers: an element's
    -- effective_from (none: the version's start) until the person's next element
    SELECT opportunity_id, version, user_psa_id, rate, eff_from,
           coalesce(lead(eff_from) OVER (PARTITION BY opportunity_id, version, user_psa_id
                                         ORDER BY eff_from), 'infinity'::date) AS eff_to
      FROM (SELECT DISTINCT ON (c.opportunity_id, c.version, p.psa_id, 4)
                   c.opportunity_id, c.version, p.psa_id AS user_psa_id,
                   CASE WHEN (o.value ->> 'effective_from') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
                        THEN (o.value ->> 'effective_from')::date
                        ELSE '-infinity'::date END AS eff_from,
                   (o.value ->> 'rate')::numeric AS rate
              FROM core.contracts c
             CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(c.rate_overrides) = 'array' THEN c.rate_overrides
                        ELSE '[]'::jsonb END) o
              JOIN core.people p ON lower(p.email) = lower(o.value ->> 'user_email')
             WHERE """
    + _USABLE
    + """
               AND (o.value ->> 'rate') ~ '^[0-9]+(\\.[0-9]+)?$'
             ORDER BY c.opportunity_id, c.version, p.psa_id, 4, p.deleted_at NULLS FIRST) k
;"""
    "CREATE TEMP TABLE card ON COMMIT DROP AS" + """
    -- the person's billable rate card effective on the day (the latest that covers it)
    SELECT DISTINCT ON (t.psa_id) t.psa_id, r.amount, r.currency
      FROM core.time_entries t
      JOIN core.rate_cards r
        ON r.person_psa_id = t.user_psa_id AND r.kind = 'billable' AND r.deleted_at IS NULL
       AND r.valid_from <= t.spent_date AND (r.valid_to IS NULL OR r.valid_to >= t.spent_date)
     WHERE t.deleted_at IS NULL AND t.billable AND t.billable_rate IS NULL
     ORDER BY t.psa_id, r.valid_from DESC
;"""
    "CREATE INDEX ON pg_temp.card (psa_id);"
    "CREATE TEMP TABLE psa_cur ON COMMIT DROP AS" + """
    -- the currency of each PSA client (Harvest time entries do not carry it): the PSA's own
    -- (core.psa_clients, what Harvest prices in), else the CRM client's linked to it
    SELECT DISTINCT ON (client_psa_id) client_psa_id, currency
      FROM (SELECT p.psa_id AS client_psa_id, p.currency, 1 AS pref
              FROM core.psa_clients p
             WHERE p.deleted_at IS NULL AND p.currency IS NOT NULL
            UNION ALL
            SELECT m.psa_id, c.currency, 2
              FROM core.id_map m
              JOIN core.clients c ON c.canonical_id = m.canonical_id AND c.deleted_at IS NULL
             WHERE m.entity_type = 'client' AND m.psa_id IS NOT NULL) k
     ORDER BY client_psa_id, pref
;"""
    "CREATE TEMP TABLE billed_src ON COMMIT DROP AS" + """
    -- what erpsync billed, by item type and source id (joined on the source's own key)
    SELECT split_part(item_key, ':', 1) AS item_type,
           substr(item_key, length(split_part(item_key, ':', 1)) + 2) AS source_id
      FROM billing.billed_items
     WHERE split_part(item_key, ':', 1) IN ('time', 'expense')
;"""
    "CREATE TEMP TABLE unbilled_from ON COMMIT DROP AS" + """
    -- the first date of unbilled, billable work not covered by a fee: only from it on can an
    -- entry be held as a duplicate or for its day's hours (earlier ones are billed or not
    -- billable: held for neither)
    SELECT min(t.spent_date) AS d
      FROM core.time_entries t
     WHERE t.deleted_at IS NULL AND t.billable AND NOT t.is_billed
       AND NOT EXISTS (SELECT 1 FROM ctr_id c
                        WHERE c.psa_project_id = t.project_psa_id
                          AND t.spent_date >= c.eff_from AND t.spent_date < c.eff_to
                          AND c.billing_model IN ('fixed_fee', 'retainer'))
;"""
    "CREATE TEMP TABLE day_over ON COMMIT DROP AS" + """
    -- plausibility: the person-days whose hours (every live entry of the person that day)
    -- exceed the daily bound - one aggregate per run, over the days that can hold an entry
    -- (unbilled_from on), kept only where over (few rows)
    SELECT t.user_psa_id, t.spent_date, sum(t.hours) AS day_hours
      FROM core.time_entries t
     WHERE t.deleted_at IS NULL AND t.spent_date >= (SELECT u.d FROM unbilled_from u)
     GROUP BY 1, 2
    HAVING sum(t.hours) > (SELECT s.max_hours_per_person_day FROM recon.settings s WHERE s.id)
;"""
    "CREATE TEMP TABLE people_x ON COMMIT DROP AS" + """
    -- each person's role and, for plausibility, the band of their billable rate cards in EUR
    -- (recon.currencies.per_eur; a card without a currency - Harvest rates carry none - is in
    -- recon.settings.rate_card_currency) already scaled by the ratio bounds: the entries join
    -- it instead of core.people, so the band costs no extra join per entry
    SELECT coalesce(p.psa_id, b.user_psa_id) AS psa_id, p.role, b.lo_eur, b.hi_eur,
           b.lo_eur * s.rate_ratio_min AS band_lo_eur, b.hi_eur * s.rate_ratio_max AS band_hi_eur
      FROM core.people p
      FULL JOIN (SELECT r.person_psa_id AS user_psa_id, min(r.amount / rc.per_eur) AS lo_eur,
                        max(r.amount / rc.per_eur) AS hi_eur
                   FROM core.rate_cards r
                   JOIN recon.settings st ON st.id
                   JOIN recon.currencies rc
                     ON rc.code = coalesce(r.currency, st.rate_card_currency)
                    AND rc.per_eur IS NOT NULL
                  WHERE r.kind = 'billable' AND r.deleted_at IS NULL AND r.amount IS NOT NULL
                  GROUP BY 1) b ON b.user_psa_id = p.psa_id
     CROSS JOIN recon.settings s
     WHERE s.id
;"""
    "ANALYZE pg_temp.billed_src; ANALYZE pg_temp.ctr_id; ANALYZE pg_temp.ctr_code;"
    " ANALYZE pg_temp.ovr; ANALYZE pg_temp.card; ANALYZE pg_temp.psa_cur;"
    " ANALYZE pg_temp.day_over; ANALYZE pg_temp.people_x"
)

#: recon.items is partitioned in SHARDS shards (migration 0015); a parallel run gives each
#: worker one shard. An item's shard comes from its contract (else, without a contract, its PSA
#: project), so all items of one contract are in one shard: a cap's running total and a
#: duplicate group (same project, same contract) never span two workers.
SHARDS = 2
_SHARD_OF = "((hashtext(coalesce({key}, '')) & 2147483647) %% 2)::smallint"
#: Only the shards the statement computes (parameter ``shards``: a list, all of them serially).
_IN_SHARDS = " = ANY(%(shards)s::smallint[])"

# --------------------------------------------------------------------------- time entries

#: the shard: the contract found by PSA project (its shard is in the lookup), else the
#: contract found by project code, else the PSA project
#: A capped T&M contract of the run's shards (``k``: the lookup's alias), with the entry ``t``
#: inside its dates
_CAPPED = (
    "{k}.cap_type IS NOT NULL AND {k}.cap_value IS NOT NULL"
    " AND coalesce({k}.billing_model, 'time_and_materials') = 'time_and_materials'"
    " AND {k}.shard" + _IN_SHARDS + " AND ({k}.ends_on IS NULL OR t.spent_date <= {k}.ends_on)"
    " AND ({k}.starts_on IS NULL OR t.spent_date >= {k}.starts_on)"
)
_T_SHARD = (
    "CASE WHEN c1.opportunity_id IS NOT NULL THEN c1.shard ELSE "
    + _SHARD_OF.format(key="c2.opportunity_id, t.project_psa_id")
    + " END"
)
_TIME = f"""
t0 AS (
    SELECT t.psa_id, t.spent_date, t.hours, t.billable, t.approval_status,
           -- billed in the PSA, or by erpsync (the ledger, looked up only when not in the PSA)
           (t.is_billed OR t.psa_id IN (SELECT bs.source_id FROM billed_src bs
                                         WHERE bs.item_type = 'time')) AS billed,
           t.billable_rate, coalesce(t.currency, pc.currency) AS te_currency,
           t.user_psa_id, t.client_psa_id,
           t.project_psa_id, t.task_psa_id, t.user_assignment_psa_id, t.created_at,
           -- the contract's columns straight from the lookups (no second contracts join)
           {_PICK},
           {_T_SHARD} AS shard
      FROM core.time_entries t
      LEFT JOIN ctr_id c1 ON c1.psa_project_id = t.project_psa_id
                         AND t.spent_date >= c1.eff_from AND t.spent_date < c1.eff_to
      LEFT JOIN ctr_code c2 ON c1.opportunity_id IS NULL AND c2.project_code = t.project_code
                           AND t.spent_date >= c2.eff_from AND t.spent_date < c2.eff_to
      LEFT JOIN psa_cur pc ON t.currency IS NULL AND pc.client_psa_id = t.client_psa_id
     WHERE t.deleted_at IS NULL
       -- the shard first by the PSA project's contract (one cheap join), then exactly
       AND (c1.opportunity_id IS NULL OR c1.shard{_IN_SHARDS})
       AND {_T_SHARD}{_IN_SHARDS}
),
dup_from AS MATERIALIZED (
    SELECT d FROM unbilled_from
),
dup_keys AS (
    SELECT user_psa_id, spent_date, project_psa_id, coalesce(task_psa_id, '') AS task, hours,
           coalesce(notes, '') AS notes
      FROM core.time_entries
     WHERE deleted_at IS NULL
       -- a duplicate shares its original's date and is flagged only when it is unbilled,
       -- billable T&M work: only dates from the first such entry on can hold one
       AND spent_date >= (SELECT d FROM dup_from)
     GROUP BY 1, 2, 3, 4, 5, 6
    HAVING count(*) > 1
),
dups AS (
    SELECT t.psa_id, first_value(t.psa_id) OVER w AS dup_original, row_number() OVER w AS dup_rank
      FROM core.time_entries t
      JOIN dup_keys k
        ON k.user_psa_id = t.user_psa_id AND k.spent_date = t.spent_date
       AND k.project_psa_id = t.project_psa_id AND k.task = coalesce(t.task_psa_id, '')
       AND k.hours = t.hours AND k.notes = coalesce(t.notes, '')
     WHERE t.deleted_at IS NULL AND t.spent_date >= (SELECT d FROM dup_from)
    WINDOW w AS (PARTITION BY t.user_psa_id, t.spent_date, t.project_psa_id,
                              coalesce(t.task_psa_id, ''), t.hours, coalesce(t.notes, '')
                 ORDER BY t.created_at NULLS LAST, length(t.psa_id), t.psa_id)
),
cap_entries AS (
    -- the entries a cap counts, found from the capped contracts (a small hash each) rather than
    -- by sorting every entry: billable, on a capped T&M contract of the shard (by PSA project,
    -- else by project code), inside the contract's dates - the same tests as cap_scope below
    SELECT t.psa_id, t.spent_date, t.created_at, t.hours, t.billable_rate, t.user_psa_id,
           k.opportunity_id, k.version, k.cap_type, k.currency, k.per_eur
      FROM core.time_entries t
      JOIN ctr_id k ON k.psa_project_id = t.project_psa_id
                   AND t.spent_date >= k.eff_from AND t.spent_date < k.eff_to
     WHERE t.deleted_at IS NULL AND t.billable AND {_CAPPED.format(k="k")}
    UNION ALL
    SELECT t.psa_id, t.spent_date, t.created_at, t.hours, t.billable_rate, t.user_psa_id,
           k.opportunity_id, k.version, k.cap_type, k.currency, k.per_eur
      FROM ctr_code k
      JOIN core.time_entries t ON t.project_code = k.project_code
                               AND t.spent_date >= k.eff_from AND t.spent_date < k.eff_to
     WHERE t.deleted_at IS NULL AND t.billable AND {_CAPPED.format(k="k")}
       AND NOT EXISTS (SELECT 1 FROM ctr_id c WHERE c.psa_project_id = t.project_psa_id)
),
caps AS (
    -- the running total of each capped contract, in date order (then creation, then id), over
    -- its entries that are not duplicates and have a rate (contract, else PSA, else rate card)
    SELECT e.psa_id,
           sum(CASE WHEN e.cap_type = 'hours' THEN e.hours ELSE e.hours * e.eff_rate END)
               OVER (PARTITION BY e.opportunity_id
                     ORDER BY e.spent_date, e.created_at NULLS LAST, length(e.psa_id), e.psa_id
                     ROWS UNBOUNDED PRECEDING) AS cap_used
      FROM (SELECT c.psa_id, c.spent_date, c.created_at, c.hours, c.opportunity_id, c.cap_type,
                   px.band_lo_eur * c.per_eur AS band_lo, px.band_hi_eur * c.per_eur AS band_hi,
                   CASE WHEN o.rate IS NOT NULL THEN o.rate
                        WHEN c.billable_rate IS NOT NULL THEN c.billable_rate
                        ELSE (SELECT rc.amount FROM card rc
                               WHERE rc.psa_id = c.psa_id
                                 AND (rc.currency IS NULL OR rc.currency = c.currency))
                   END AS eff_rate
              FROM cap_entries c
              LEFT JOIN ovr o ON o.opportunity_id = c.opportunity_id
                             AND o.version = c.version AND o.user_psa_id = c.user_psa_id
                             AND c.spent_date >= o.eff_from AND c.spent_date < o.eff_to
              LEFT JOIN dups d ON d.psa_id = c.psa_id
              LEFT JOIN people_x px ON px.psa_id = c.user_psa_id
             WHERE coalesce(d.dup_rank, 1) = 1
               -- an implausible entry (held, see t3/t4) consumes no cap, like a duplicate
               AND (c.user_psa_id, c.spent_date) NOT IN (SELECT dh.user_psa_id, dh.spent_date
                                                           FROM day_over dh)
               AND c.hours <= (SELECT max_hours_per_entry FROM cfg)
               AND c.spent_date <= (SELECT latest_date FROM cfg)) e
     WHERE e.eff_rate IS NOT NULL AND e.hours * e.eff_rate <> 0
       AND NOT (e.eff_rate < e.band_lo OR e.eff_rate > e.band_hi) IS TRUE
),
t1 AS (
    SELECT t0.*, d.dup_original, coalesce(d.dup_rank, 1) AS dup_rank
      FROM t0
      LEFT JOIN dups d ON d.psa_id = t0.psa_id
),
t2 AS (
    SELECT t1.*, o.rate AS contract_rate, p.role, cu.cap_used,
           -- the band in EUR: converted only where compared (T&M) or reported (held)
           p.lo_eur, p.hi_eur, p.band_lo_eur, p.band_hi_eur,
           -- the rate card only where neither the contract nor the PSA has a rate (few
           -- entries): looked up for those, not hashed for the million others
           CASE WHEN o.rate IS NULL AND t1.billable_rate IS NULL
                THEN (SELECT rc.amount FROM card rc WHERE rc.psa_id = t1.psa_id) END
               AS card_rate,
           CASE WHEN o.rate IS NULL AND t1.billable_rate IS NULL
                THEN (SELECT rc.currency FROM card rc WHERE rc.psa_id = t1.psa_id) END
               AS card_currency,
           (t1.billable AND t1.c_opportunity_id IS NOT NULL
            AND coalesce(t1.c_billing_model, 'time_and_materials') = 'time_and_materials')
               AS tm
      FROM t1
      LEFT JOIN ovr o ON o.opportunity_id = t1.c_opportunity_id
                     AND o.version = t1.c_version AND o.user_psa_id = t1.user_psa_id
                     AND t1.spent_date >= o.eff_from AND t1.spent_date < o.eff_to
      LEFT JOIN people_x p ON p.psa_id = t1.user_psa_id
      LEFT JOIN caps cu ON cu.psa_id = t1.psa_id
),
t3 AS (
    SELECT t2.*,
           CASE WHEN contract_rate IS NOT NULL THEN contract_rate
                WHEN billable_rate IS NOT NULL THEN billable_rate
                WHEN card_rate IS NOT NULL AND coalesce(card_currency, c_currency) = c_currency
                THEN card_rate
           END AS eff_rate,
           CASE WHEN contract_rate IS NOT NULL THEN 'contract'
                WHEN billable_rate IS NOT NULL THEN 'psa'
                WHEN card_rate IS NOT NULL AND coalesce(card_currency, c_currency) = c_currency
                THEN 'rate_card'
           END AS rate_source,
           CASE WHEN contract_rate IS NULL AND billable_rate IS NOT NULL
                THEN coalesce(te_currency, c_currency)
                ELSE coalesce(c_currency, te_currency)
           END AS cur,
           (billable AND c_opportunity_id IS NULL) AS p_unknown,
           (billable AND spent_date > c_ends_on) IS TRUE AS p_closed,
           (billable AND spent_date < c_starts_on) IS TRUE AS p_outside,
           -- plausibility (bounds in recon.settings, migration 0021)
           (billable AND (spent_date > (SELECT latest_date FROM cfg)
                          OR spent_date < c_starts_on - (SELECT date_tolerance_days FROM cfg)
                          OR spent_date > c_ends_on + (SELECT date_tolerance_days FROM cfg)))
               IS TRUE AS p_far,
           (tm AND hours > (SELECT max_hours_per_entry FROM cfg)) AS p_hours,
           -- a hashed lookup of the (few) person-days over the bound
           (tm AND (user_psa_id, spent_date) IN (SELECT dh.user_psa_id, dh.spent_date
                                                   FROM day_over dh)) AS p_day,
           (tm AND dup_rank > 1) AS p_dup
      FROM t2
),
t4 AS (
    SELECT t3.*,
           (tm AND eff_rate IS NULL) AS p_missing_rate,
           (tm AND te_currency <> c_currency) IS TRUE AS p_currency,
           (tm AND contract_rate IS NOT NULL AND billable_rate IS NOT NULL
            AND billable_rate <> contract_rate) AS p_rate_differs,
           (tm AND eff_rate IS NOT NULL AND (hours = 0 OR eff_rate = 0)) IS TRUE AS p_zero,
           (tm AND (eff_rate < band_lo_eur * c_per_eur OR eff_rate > band_hi_eur * c_per_eur))
               IS TRUE AS p_rate_card
      FROM t3
),
t5 AS (
    SELECT t4.*,
           (tm AND c_cap_type IS NOT NULL AND c_cap_value IS NOT NULL
            AND NOT (p_unknown OR p_far OR p_closed OR p_outside OR p_hours OR p_day OR p_zero
                     OR p_dup OR p_rate_card)
            AND eff_rate IS NOT NULL) IS TRUE AS cap_scope
      FROM t4
),
t6 AS (
    SELECT t5.*,
           (cap_scope AND cap_used > c_cap_value) IS TRUE AS p_over_cap,
           CASE WHEN p_unknown OR p_far OR p_closed OR p_outside OR p_hours OR p_day OR p_zero
                     OR p_dup OR p_missing_rate OR p_rate_card
                     OR p_currency OR p_rate_differs OR (cap_used > c_cap_value) IS TRUE
           THEN array_remove(ARRAY[
                   CASE WHEN p_unknown THEN 'unknown_project' END,
                   CASE WHEN p_far THEN 'implausible_date' END,
                   CASE WHEN p_closed THEN 'closed_project' END,
                   CASE WHEN p_outside THEN 'outside_contract_dates' END,
                   CASE WHEN p_hours THEN 'hours_over_entry_limit' END,
                   CASE WHEN p_day THEN 'hours_over_day_limit' END,
                   CASE WHEN p_zero THEN 'zero_amount' END,
                   CASE WHEN p_dup THEN 'duplicate_entry' END,
                   CASE WHEN p_missing_rate THEN 'missing_rate' END,
                   CASE WHEN p_rate_card THEN 'rate_off_card' END,
                   CASE WHEN (cap_scope AND cap_used > c_cap_value) IS TRUE THEN 'over_cap' END,
                   CASE WHEN p_currency THEN 'currency_differs_from_contract' END,
                   CASE WHEN p_rate_differs THEN 'rate_differs_from_contract' END
               ], NULL)
           ELSE '{{}}'::text[] END AS probs
      FROM t5
),
time_items AS (
    SELECT 'time:' || psa_id AS item_key, 'time'::text AS item_type, psa_id AS source_id,
           c_account_id AS account_id, client_psa_id, c_opportunity_id AS opportunity_id,
           c_version AS contract_version, project_psa_id, user_psa_id, user_assignment_psa_id,
           task_psa_id, NULL::text AS task_name, role, spent_date AS item_date,
           date_trunc('month', spent_date::timestamp)::date AS period_start, hours,
           NULL::numeric AS quantity,
           CASE WHEN tm OR p_unknown OR p_far OR p_closed OR p_outside THEN eff_rate END AS rate,
           cur::char(3) AS currency,
           CASE WHEN tm OR p_unknown OR p_far OR p_closed OR p_outside THEN hours * eff_rate END
               AS amount,
           approval_status = 'approved' AS approved,
           CASE WHEN billed THEN 'billed'
                WHEN p_unknown OR p_far OR p_closed OR p_outside THEN 'on_hold'
                WHEN NOT tm THEN 'non_billable'
                WHEN cardinality(probs) > 0 THEN 'on_hold'
                WHEN spent_date <= (SELECT lock_date FROM cfg) THEN 'on_hold'
                WHEN approval_status <> 'approved' THEN 'on_hold'
                ELSE 'ready'
           END AS state,
           CASE WHEN billed THEN NULL
                WHEN p_unknown OR p_far OR p_closed OR p_outside THEN probs[1]
                WHEN NOT tm THEN NULL
                WHEN cardinality(probs) > 0 THEN probs[1]
                WHEN spent_date <= (SELECT lock_date FROM cfg) THEN 'locked_period'
                WHEN approval_status <> 'approved' THEN 'not_approved'
           END AS reason_code,
           CASE WHEN billed OR (NOT tm AND NOT (p_unknown OR p_far OR p_closed OR p_outside))
                THEN '{{}}'::text[] ELSE probs END AS problems,
           CASE
             WHEN billed THEN NULL
             WHEN NOT tm AND NOT (p_unknown OR p_far OR p_closed OR p_outside) THEN
               -- constants for the common cases: no jsonb built per row
               CASE WHEN NOT billable THEN '{{"why": "not billable in the PSA"}}'::jsonb
                    WHEN c_billing_model = 'fixed_fee'
                    THEN '{{"why": "covered by the fixed_fee fee"}}'::jsonb
                    WHEN c_billing_model = 'retainer'
                    THEN '{{"why": "covered by the retainer fee"}}'::jsonb
                    ELSE jsonb_build_object('why', 'covered by the ' || c_billing_model || ' fee')
               END
             WHEN cardinality(probs) = 0 AND approval_status = 'approved'
                  AND NOT (spent_date <= (SELECT lock_date FROM cfg)) IS TRUE THEN NULL
             ELSE jsonb_strip_nulls(jsonb_build_object(
               'rate_source', rate_source,
               'contract_rate', contract_rate,
               'psa_rate', billable_rate,
               'contract_currency', c_currency,
               'psa_currency', te_currency,
               'contract_starts_on', CASE WHEN p_outside OR p_far THEN c_starts_on END,
               'contract_ends_on', CASE WHEN p_closed OR p_far THEN c_ends_on END,
               'date_tolerance_days',
                   CASE WHEN p_far THEN (SELECT date_tolerance_days FROM cfg) END,
               'max_hours_per_entry',
                   CASE WHEN p_hours THEN (SELECT max_hours_per_entry FROM cfg) END,
               'person_day_hours', CASE WHEN p_day THEN
                   (SELECT dh.day_hours FROM day_over dh
                     WHERE dh.user_psa_id = t6.user_psa_id AND dh.spent_date = t6.spent_date)
                   END,
               'max_hours_per_person_day',
                   CASE WHEN p_day THEN (SELECT max_hours_per_person_day FROM cfg) END,
               'rate_card_low', CASE WHEN p_rate_card THEN lo_eur * c_per_eur END,
               'rate_card_high', CASE WHEN p_rate_card THEN hi_eur * c_per_eur END,
               'rate_ratio_min', CASE WHEN p_rate_card THEN (SELECT rate_ratio_min FROM cfg) END,
               'rate_ratio_max', CASE WHEN p_rate_card THEN (SELECT rate_ratio_max FROM cfg) END,
               'duplicate_of', CASE WHEN p_dup THEN dup_original END,
               'cap_type', CASE WHEN cap_scope THEN c_cap_type END,
               'cap_value', CASE WHEN cap_scope THEN c_cap_value END,
               'cap_used_before', CASE WHEN (cap_scope AND cap_used > c_cap_value) IS TRUE
                   THEN cap_used - CASE WHEN c_cap_type = 'hours' THEN hours
                                        ELSE hours * eff_rate END END,
               'cap_remaining', CASE WHEN (cap_scope AND cap_used > c_cap_value) IS TRUE
                   THEN greatest(c_cap_value - (cap_used - CASE WHEN c_cap_type = 'hours'
                        THEN hours ELSE hours * eff_rate END), 0) END,
               'approval_status', approval_status))
           END AS reason_detail,
           shard
      FROM t6
)"""

# --------------------------------------------------------------------------- expenses

#: the shard: the contract found by PSA project (its shard is in the lookup), else the
#: contract found by project code, else the PSA project
_E_SHARD = (
    "CASE WHEN c1.opportunity_id IS NOT NULL THEN c1.shard ELSE "
    + _SHARD_OF.format(key="c2.opportunity_id, e.project_psa_id")
    + " END"
)
_EXPENSE = f"""
e1 AS (
    SELECT e.psa_id, e.spent_date, e.total_cost, e.units, e.currency AS e_currency,
           e.billable, e.approval_status, e.has_receipt, e.user_psa_id, e.client_psa_id,
           e.project_psa_id, e.user_assignment_psa_id, e.expense_category_name,
           (e.is_billed OR b.source_id IS NOT NULL) AS billed,
           {_PICK},
           ec.minor_units, ec.per_eur,
           {_E_SHARD} AS shard
      FROM core.expenses e
      LEFT JOIN billed_src b ON b.item_type = 'expense' AND b.source_id = e.psa_id
      LEFT JOIN ctr_id c1 ON c1.psa_project_id = e.project_psa_id
                         AND e.spent_date >= c1.eff_from AND e.spent_date < c1.eff_to
      LEFT JOIN ctr_code c2 ON c1.opportunity_id IS NULL AND c2.project_code = e.project_code
                           AND e.spent_date >= c2.eff_from AND e.spent_date < c2.eff_to
      LEFT JOIN recon.currencies ec ON ec.code = e.currency
     WHERE e.deleted_at IS NULL
       -- the shard first by the PSA project's contract (one cheap join), then exactly
       AND (c1.opportunity_id IS NULL OR c1.shard{_IN_SHARDS})
       AND {_E_SHARD}{_IN_SHARDS}
),
e2 AS (
    SELECT e1.*,
           round((SELECT receipt_threshold_eur FROM cfg) * e1.per_eur, e1.minor_units)
               AS receipt_threshold,
           round(pol.limit_amount / lc.per_eur
                 * CASE WHEN pol.per_unit THEN coalesce(nullif(e1.units, 0), 1) ELSE 1 END
                 * e1.per_eur, e1.minor_units) AS policy_limit,
           coalesce(c_markup_pct, (SELECT expense_markup_pct FROM cfg)) AS markup_pct,
           (billable AND c_opportunity_id IS NULL) AS p_unknown,
           (billable AND spent_date > c_ends_on) IS TRUE AS p_closed,
           (billable AND spent_date < c_starts_on) IS TRUE AS p_outside,
           (billable AND (spent_date > (SELECT latest_date FROM cfg)
                          OR spent_date < c_starts_on - (SELECT date_tolerance_days FROM cfg)
                          OR spent_date > c_ends_on + (SELECT date_tolerance_days FROM cfg)))
               IS TRUE AS p_far
      FROM e1
      LEFT JOIN recon.expense_policy pol ON pol.category = e1.expense_category_name
      LEFT JOIN recon.currencies lc ON lc.code = pol.limit_currency
),
e3 AS (
    SELECT e2.*,
           (billable AND NOT has_receipt AND total_cost > receipt_threshold) IS TRUE
               AS p_receipt,
           (billable AND total_cost > policy_limit) IS TRUE AS p_policy,
           (billable AND e_currency <> c_currency) IS TRUE AS p_currency,
           -- Harvest's total_cost is any decimal: a negative one is a credit (billed as a
           -- negative line, marked ``credit``); zero has nothing to bill
           (billable AND total_cost = 0) IS TRUE AS p_zero
      FROM e2
),
e4 AS (
    SELECT e3.*,
           array_remove(ARRAY[
               CASE WHEN p_unknown THEN 'unknown_project' END,
               CASE WHEN p_far THEN 'implausible_date' END,
               CASE WHEN p_closed THEN 'closed_project' END,
               CASE WHEN p_outside THEN 'outside_contract_dates' END,
               CASE WHEN p_zero THEN 'zero_amount' END,
               CASE WHEN p_receipt THEN 'missing_receipt' END,
               CASE WHEN p_policy THEN 'expense_over_policy' END,
               CASE WHEN p_currency THEN 'currency_differs_from_contract' END
           ], NULL) AS probs
      FROM e3
),
expense_items AS (
    SELECT 'expense:' || psa_id, 'expense'::text, psa_id, c_account_id, client_psa_id,
           c_opportunity_id, c_version, project_psa_id, user_psa_id, user_assignment_psa_id,
           NULL::text, expense_category_name, NULL::text, spent_date,
           date_trunc('month', spent_date::timestamp)::date, NULL::numeric, units,
           CASE WHEN billable THEN trim_scale((100 + markup_pct) / 100) END,
           e_currency::char(3),
           CASE WHEN billable THEN trim_scale(total_cost * (100 + markup_pct) / 100) END,
           approval_status = 'approved',
           CASE WHEN billed THEN 'billed'
                WHEN NOT billable THEN 'non_billable'
                WHEN cardinality(probs) > 0 THEN 'on_hold'
                WHEN spent_date <= (SELECT lock_date FROM cfg) THEN 'on_hold'
                WHEN approval_status <> 'approved' THEN 'on_hold'
                ELSE 'ready'
           END,
           CASE WHEN billed OR NOT billable THEN NULL
                WHEN cardinality(probs) > 0 THEN probs[1]
                WHEN spent_date <= (SELECT lock_date FROM cfg) THEN 'locked_period'
                WHEN approval_status <> 'approved' THEN 'not_approved'
           END,
           CASE WHEN billed OR NOT billable THEN '{{}}'::text[] ELSE probs END,
           CASE
             WHEN billed THEN NULL
             WHEN NOT billable THEN '{{"why": "not billable in the PSA"}}'::jsonb
             WHEN cardinality(probs) = 0 AND approval_status = 'approved'
                  AND NOT (spent_date <= (SELECT lock_date FROM cfg)) IS TRUE
             THEN CASE WHEN total_cost < 0
                       THEN jsonb_build_object('credit', true, 'total_cost', total_cost) END
             ELSE jsonb_strip_nulls(jsonb_build_object(
               'credit', CASE WHEN total_cost < 0 THEN true END,
               'total_cost', total_cost,
               'markup_pct', markup_pct,
               'receipt_threshold', CASE WHEN p_receipt THEN receipt_threshold END,
               'policy_limit', CASE WHEN p_policy THEN policy_limit END,
               'units', CASE WHEN p_policy THEN units END,
               'contract_currency', c_currency,
               'expense_currency', e_currency,
               'contract_starts_on', CASE WHEN p_outside OR p_far THEN c_starts_on END,
               'contract_ends_on', CASE WHEN p_closed OR p_far THEN c_ends_on END,
               'date_tolerance_days',
                   CASE WHEN p_far THEN (SELECT date_tolerance_days FROM cfg) END,
               'approval_status', approval_status))
           END,
           shard
      FROM e4
)"""

# --------------------------------------------------------------------------- fees

#: A milestone's item key as SQL over ``core.contract_milestones m`` (one home: billing_terms).
_MILESTONE_KEY = milestone_item_key_sql("m")

_FEES = (
    """
milestone_items AS (
    SELECT """
    + _MILESTONE_KEY
    + """,
           'milestone'::text,
           coalesce(m.crm_milestone_id, m.opportunity_id || ':' || m.version || ':' || m.seq),
           c.account_id, NULL::text, m.opportunity_id, m.version, c.psa_project_id, NULL::text,
           NULL::text, NULL::text, m.name, NULL::text, m.due_date,
           date_trunc('month', m.due_date::timestamp)::date, NULL::numeric, 1::numeric, m.amount,
           m.currency, m.amount, m.status = 'accepted',
           CASE WHEN b.item_key IS NOT NULL THEN 'billed'
                WHEN m.due_date <= (SELECT lock_date FROM cfg) THEN 'on_hold'
                WHEN m.status = 'accepted' THEN 'ready'
                ELSE 'on_hold' END,
           CASE WHEN b.item_key IS NOT NULL THEN NULL
                WHEN m.due_date <= (SELECT lock_date FROM cfg) THEN 'locked_period'
                WHEN m.status = 'accepted' THEN NULL
                WHEN m.due_date > %(as_of)s THEN 'not_yet_due'
                ELSE 'milestone_not_accepted' END,
           '{}'::text[],
           CASE WHEN b.item_key IS NULL AND m.status <> 'accepted'
                THEN jsonb_build_object('due_date', m.due_date, 'status', m.status,
                                        'days_overdue', greatest(%(as_of)s - m.due_date, 0))
           END,
           """
    + _SHARD_OF.format(key="m.opportunity_id")
    + """
      FROM core.contract_milestones m
      JOIN core.contracts c ON c.opportunity_id = m.opportunity_id AND c.version = m.version
      LEFT JOIN billing.billed_items b
        ON b.item_key = """
    + _MILESTONE_KEY
    + """
     WHERE c.status IN ('complete', 'adopted', 'pending')
       AND """
    + _SHARD_OF.format(key="m.opportunity_id")
    + _IN_SHARDS
    + """
),
retainer_items AS (
    SELECT 'retainer:' || l.schedule_id || ':' || l.seq, 'retainer'::text,
           l.schedule_id || ':' || l.seq, c.account_id, NULL::text, s.opportunity_id,
           s.version, c.psa_project_id, NULL::text, NULL::text, NULL::text, l.description,
           NULL::text, l.due_date,
           date_trunc('month', coalesce(l.period_start, l.due_date)::timestamp)::date,
           NULL::numeric, 1::numeric, l.amount, l.currency, l.amount, l.due_date <= %(as_of)s,
           CASE WHEN b.item_key IS NOT NULL THEN 'billed'
                WHEN l.due_date <= (SELECT lock_date FROM cfg) THEN 'on_hold'
                WHEN l.due_date <= %(as_of)s THEN 'ready'
                ELSE 'on_hold' END,
           CASE WHEN b.item_key IS NOT NULL THEN NULL
                WHEN l.due_date <= (SELECT lock_date FROM cfg) THEN 'locked_period'
                WHEN l.due_date <= %(as_of)s THEN NULL
                ELSE 'not_yet_due' END,
           '{}'::text[],
           CASE WHEN b.item_key IS NULL AND l.due_date > %(as_of)s
                THEN jsonb_build_object('due_date', l.due_date) END,
           """
    + _SHARD_OF.format(key="s.opportunity_id")
    + """
      FROM billing.schedule_lines l
      JOIN billing.schedules s ON s.schedule_id = l.schedule_id AND s.status = 'active'
      JOIN core.contracts c ON c.opportunity_id = s.opportunity_id AND c.version = s.version
      LEFT JOIN billing.billed_items b ON b.item_key = 'retainer:' || l.schedule_id || ':' || l.seq
     WHERE l.kind = 'retainer'
       AND """
    + _SHARD_OF.format(key="s.opportunity_id")
    + _IN_SHARDS
    + """
)"""
)

#: The columns of recon.items the reconciliation computes (compared on rerun).
DATA_COLUMNS = (
    "item_type",
    "source_id",
    "account_id",
    "client_psa_id",
    "opportunity_id",
    "contract_version",
    "project_psa_id",
    "user_psa_id",
    "user_assignment_psa_id",
    "task_psa_id",
    "task_name",
    "role",
    "item_date",
    "period_start",
    "hours",
    "quantity",
    "rate",
    "currency",
    "amount",
    "approved",
    "state",
    "reason_code",
    "problems",
    "reason_detail",
    "shard",
)

STAGE_TABLE = "recon_stage"

#: The stage: a temp table shaped like recon.items' computed columns, dropped at commit.
_cols = ", ".join(DATA_COLUMNS)
_s_cols = ", ".join(f"s.{c}" for c in DATA_COLUMNS)
_i_cols = ", ".join(f"i.{c}" for c in DATA_COLUMNS)
_set = ", ".join(f"{c} = s.{c}" for c in DATA_COLUMNS)

#: The stage: only what differs from recon.items (new, changed, or gone), dropped at commit.
CREATE_STAGE = (
    "DROP TABLE IF EXISTS pg_temp.recon_stage; "
    "CREATE TEMP TABLE recon_stage ON COMMIT DROP AS "
    "SELECT item_key, " + _cols + ", false AS gone, false AS known FROM recon.items WITH NO DATA"
)

#: Every item of the given shards classified (``src``: item_key + DATA_COLUMNS). Parameters:
#: as_of, shards.
CLASSIFY = (
    "WITH"
    + _CONTRACTS
    + ","
    + _TIME
    + ","
    + _EXPENSE
    + ","
    + _FEES
    + ",\nsrc AS (SELECT * FROM time_items\n"
    "UNION ALL SELECT * FROM expense_items\n"
    "UNION ALL SELECT * FROM milestone_items\n"
    "UNION ALL SELECT * FROM retainer_items)\n"
)

#: The differences with recon.items (one hash full join, the computed shards' rows only): new
#: items, changed items (IS DISTINCT FROM on every computed column) and items whose source is
#: gone; columns: item_key, DATA_COLUMNS, gone, known. Parameters: as_of, shards.
_DIFF = (
    CLASSIFY
    + "SELECT coalesce(s.item_key, i.item_key), "
    + _s_cols
    + ", s.item_key IS NULL, i.item_key IS NOT NULL\n"
    "  FROM src s FULL JOIN (SELECT * FROM recon.items i WHERE i.shard"
    + _IN_SHARDS
    + ") i ON i.item_key = s.item_key\n"
    " WHERE s.item_key IS NULL OR i.item_key IS NULL\n"
    "    OR (" + _i_cols + ") IS DISTINCT FROM (" + _s_cols + ")"
)

#: A serial run: the stage filled in the run's own transaction (shards: all).
FILL_STAGE = "INSERT INTO recon_stage\n" + _DIFF

#: A parallel run's worker: its shard's differences with recon.items, into its work table
#: (``{table}``: a name the run made, ``recon_work.r<tag>_<shard>``). Parameters: as_of, shards.
SHARD_DIFF = "CREATE UNLOGGED TABLE {table} (item_key, " + _cols + ", gone, known) AS\n" + _DIFF

#: The workers' differences ({tables}: a UNION ALL of their tables) into the run's stage. An
#: item that moved to another shard (its contract changed) is gone from one worker's view and new
#: in the other's: one row, the new one, known when recon.items has it (an update that moves it
#: to its new partition, not an insert).
FILL_STAGE_FROM = (
    "INSERT INTO recon_stage\n"
    "SELECT DISTINCT ON (w.item_key) w.item_key, "
    + ", ".join(f"w.{c}" for c in DATA_COLUMNS)
    + ", w.gone, w.gone OR EXISTS (SELECT 1 FROM recon.items i WHERE i.item_key = w.item_key)\n"
    "  FROM ({tables}) w ORDER BY w.item_key, w.gone"
)

#: recon.item_totals' part of a summary group (migration 0028, read by the billing cockpit),
#: after SUMMARY's own columns: period, client, item type, the WIP age bucket against the run's
#: as-of date (0: 0-30 days or dated later, 1: 31-60, 2: 61-90, 3: over 90) and leakage, both
#: as recon.wip defines them. Parameter: as_of.
_WIP = "item_type IN ('time', 'expense') AND state IN ('ready', 'on_hold')"
_AGE = "(%(as_of)s::date - item_date)"
TOTALS_KEYS = (
    "period_start, account_id, client_psa_id, item_type, "
    f"CASE WHEN {_WIP} THEN CASE WHEN {_AGE} <= 30 THEN 0 WHEN {_AGE} <= 60 THEN 1 "
    f"WHEN {_AGE} <= 90 THEN 2 ELSE 3 END END::smallint, "
    f"({_WIP} AND approved AND {_AGE} > (SELECT leakage_days FROM recon.settings))"
)
#: SUMMARY's grouping: its four keys and TOTALS_KEYS' six (columns 8-13).
_SUMMARY_GROUP = "1, 2, 3, 4, 8, 9, 10, 11, 12, 13"
#: SUMMARY's columns, named (a parallel worker's totals table, TOTALS_TABLE).
_TOTALS_TABLE_COLS = (
    "state, reason_code, approved, currency, items, hours, amount, period_start, account_id,"
    " client_psa_id, item_type, age_bucket, is_leakage, newest"
)

# ------------------------------------------------------------------ the first reconciliation
#: The first reconciliation (recon.items empty) builds each shard's partition whole - a new
#: table shaped like recon.items, filled, then its indexes and keys built once from the loaded
#: rows (a sort each, not 1,000,000+ random B-tree insertions and foreign-key checks) - and
#: swaps it in for the empty partition. A parallel run builds the shards at once, one per
#: worker (each commits its table in ``recon_work``); a serial run builds them in turn in its
#: own transaction. ``{table}``: the new table's name.
SHARD_TABLE = (
    "CREATE TABLE {table} (LIKE recon.items INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
    # the partition's constraint, so attaching it needs no scan
    " ALTER TABLE {table} ADD CHECK (shard = %(shard)s)"
)
#: Parameters: as_of, shards (the one shard), run_id.
SHARD_FILL = (
    "INSERT INTO {table} (item_key, "
    + _cols
    + ", first_run_id, last_run_id)\n"
    + CLASSIFY
    + "SELECT s.item_key, "
    + _s_cols
    + ", %(run_id)s, %(run_id)s FROM src s"
)
#: The same fill, summed up as it is written (``SUMMARY``'s columns; the row version is the
#: worker's own transaction, filled in by the caller): the new partition is final, so its
#: summary is the run's for this shard, without reading the rows back.
SHARD_FILL_SUMMARY = (
    CLASSIFY.rstrip()
    + ",\nfilled AS (INSERT INTO {table} (item_key, "
    + _cols
    + ", first_run_id, last_run_id)\nSELECT s.item_key, "
    + _s_cols
    + ", %(run_id)s, %(run_id)s FROM src s\n"
    "RETURNING state, reason_code, approved, currency, hours, amount, period_start, account_id,"
    " client_psa_id, item_type, item_date)\n"
    "INSERT INTO {table}_totals\n"
    "SELECT state, reason_code, approved, currency, count(*), sum(hours), sum(amount), "
    + TOTALS_KEYS
    + ", NULL\n  FROM filled GROUP BY "
    + _SUMMARY_GROUP
)
#: recon.items' partitioned indexes and key constraints, as statements for one new shard table
#: (``{table}``); attaching it then adopts them instead of building its own.
SHARD_INDEXES = """
SELECT regexp_replace(pg_get_indexdef(i.indexrelid),
                      '^CREATE (UNIQUE )?INDEX \\S+ ON ONLY recon\\.items ',
                      'CREATE \\1INDEX ON {table} ')
  FROM pg_index i
 WHERE i.indrelid = 'recon.items'::regclass
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                                                  AND c.conrelid = i.indrelid)
UNION ALL
SELECT 'ALTER TABLE {table} ADD ' || pg_get_constraintdef(c.oid)
  FROM pg_constraint c
 WHERE c.conrelid = 'recon.items'::regclass AND c.contype IN ('p', 'u', 'f')
   AND c.conparentid = 0
"""
#: The swap, in the run's transaction, per shard: the old partition out, the new table in.
#: ``{table}``: the new table (schema-qualified), ``{name}``: its name without schema.
SHARD_SWAP = (
    "ALTER TABLE recon.items DETACH PARTITION recon.items_{shard};"
    " DROP TABLE recon.items_{shard};"
    " ALTER TABLE {table} SET SCHEMA recon;"
    " ALTER TABLE recon.{name} RENAME TO items_{shard};"
    " ALTER TABLE recon.items ATTACH PARTITION recon.items_{shard} FOR VALUES IN ({shard})"
)

UPDATE_CHANGED = (
    f"UPDATE recon.items i SET {_set}, last_run_id = %(run_id)s, updated_at = now() "
    f"FROM recon_stage s WHERE i.item_key = s.item_key AND s.known AND NOT s.gone"
)

INSERT_NEW = (
    f"INSERT INTO recon.items (item_key, {_cols}, first_run_id, last_run_id) "
    f"SELECT s.item_key, {_s_cols}, %(run_id)s, %(run_id)s FROM recon_stage s "
    f"WHERE NOT s.known"
)

DELETE_GONE = (
    "DELETE FROM recon.items i USING recon_stage s WHERE s.item_key = i.item_key AND s.gone"
)

DROP_TEMP = (
    "DROP TABLE IF EXISTS pg_temp.recon_stage, pg_temp.ctr_id, pg_temp.ctr_code, pg_temp.ovr,"
    " pg_temp.card, pg_temp.billed_src, pg_temp.unbilled_from, pg_temp.day_over,"
    " pg_temp.people_x"
)

#: Entry-level problems (the item's first reason), one exception per time entry / expense.
ENTRY_PROBLEMS = """
SELECT s.reason_code, CASE s.item_type WHEN 'time' THEN 'time_entry' ELSE 'expense' END,
       s.source_id, s.amount, s.currency, s.item_key, s.project_psa_id, s.user_psa_id,
       s.item_date, s.hours, s.reason_detail, r.owner
  FROM recon.items s
  JOIN recon.reasons r ON r.code = s.reason_code
 WHERE s.state = 'on_hold' AND s.item_type IN ('time', 'expense')
   AND s.reason_code = ANY(%(codes)s)
 ORDER BY 1, 3
"""

#: Project- and assignment-level problems, from every unbilled item that has them.
GROUP_PROBLEMS = """
SELECT p.code, p.entity_type, p.entity_key, sum(s.amount), min(s.currency), count(*),
       sum(s.hours), min(s.item_date), max(s.item_date), min(s.opportunity_id),
       min(s.project_psa_id), min(s.user_psa_id), min(r.owner),
       (array_agg(s.reason_detail ORDER BY s.item_date DESC, s.item_key))[1]
  FROM recon.items s
 CROSS JOIN LATERAL (VALUES
       ('over_cap', 'project', s.project_psa_id),
       ('currency_differs_from_contract', 'project', s.project_psa_id),
       ('rate_differs_from_contract', 'user_assignment',
        coalesce(s.user_assignment_psa_id, s.project_psa_id || '/' || s.user_psa_id))
       ) AS p(code, entity_type, entity_key)
  JOIN recon.reasons r ON r.code = p.code
 WHERE s.state = 'on_hold' AND p.code = ANY(s.problems)
 GROUP BY 1, 2, 3
 ORDER BY 1, 3
"""

#: A parallel worker's summary of its shard as it will be once the run applied the differences
#: in its table ``{table}`` (``SHARD_DIFF``): the shard's rows the differences leave alone, and
#: the new and changed ones (their row version is the run's: NULL here). Parameter: shard.
SHARD_SUMMARY_AFTER_DIFF = (
    # CREATE TABLE AS, not INSERT: PostgreSQL may read the shard with parallel workers for it
    "CREATE UNLOGGED TABLE {table}_totals (" + _TOTALS_TABLE_COLS + ") AS\n"
    "SELECT state, reason_code, approved, currency, count(*), sum(hours), sum(amount), "
    + TOTALS_KEYS
    + """, max(x)
  FROM (SELECT i.state, i.reason_code, i.approved, i.currency, i.hours, i.amount,
               i.period_start, i.account_id, i.client_psa_id, i.item_type, i.item_date,
               i.xmin::text::bigint AS x
          FROM recon.items i
         WHERE i.shard = %(shard)s
           AND NOT EXISTS (SELECT 1 FROM {table} d WHERE d.item_key = i.item_key)
        UNION ALL
        SELECT d.state, d.reason_code, d.approved, d.currency, d.hours, d.amount,
               d.period_start, d.account_id, d.client_psa_id, d.item_type, d.item_date, NULL
          FROM {table} d
         WHERE NOT d.gone) f
 GROUP BY """
    + _SUMMARY_GROUP
)
#: The run's own transaction id as recon.items' xmin shows it (32 bits).
OWN_XID = "SELECT pg_current_xact_id()::text::bigint % 4294967296"

#: Per state, reason, approval and currency, and recon.item_totals' keys (TOTALS_KEYS); with
#: the newest row version (the fingerprint). Parameter: as_of.
SUMMARY = (
    "SELECT state, reason_code, approved, currency, count(*), sum(hours), sum(amount), "
    + TOTALS_KEYS
    + ",\n       max(xmin::text::bigint)\n  FROM recon.items\n GROUP BY "
    + _SUMMARY_GROUP
)

#: A parallel worker's sums (``SUMMARY``'s columns, named), in its work table next to its shard
#: table ``{table}`` (committed by the worker, read by the run into recon.item_totals, dropped
#: with the other work tables): the totals never travel through Python.
TOTALS_TABLE = (
    "CREATE UNLOGGED TABLE {table}_totals (state text, reason_code text, approved boolean,"
    " currency char(3), items bigint, hours numeric, amount numeric, period_start date,"
    " account_id text, client_psa_id text, item_type text, age_bucket smallint,"
    " is_leakage boolean, newest bigint)"
)
#: The worker's summary by state, reason, approval and currency, from its work table.
STATE_SUMMARY_OF_WORK = (
    "SELECT state, reason_code, approved, currency, sum(items)::bigint, sum(hours), sum(amount),"
    " max(newest) FROM {table}_totals GROUP BY 1, 2, 3, 4"
)
_TOTALS_COLS = (
    "period_start, account_id, client_psa_id, currency, item_type, state, reason_code,"
    " approved, age_bucket, is_leakage, items, hours, amount"
)
#: The workers' sums into recon.item_totals ({tables}: a UNION ALL of their work tables), as
#: they come: a key both shards summed (a client with contracts in both) has a row from each.
TOTALS_FROM_WORK = (
    "INSERT INTO recon.item_totals (" + _TOTALS_COLS + ")\n"
    "SELECT " + _TOTALS_COLS + " FROM ({tables}) w"
)
#: A serial run: SUMMARY into recon.item_totals, and the state summary (with the newest row
#: version) returned, in one pass over recon.items. Parameter: as_of.
TOTALS_SERIAL = (
    "WITH s (state, reason_code, approved, currency, items, hours, amount, period_start,"
    " account_id, client_psa_id, item_type, age_bucket, is_leakage, newest) AS (\n"
    + SUMMARY
    + "\n), stored AS (INSERT INTO recon.item_totals ("
    + _TOTALS_COLS
    + ") SELECT "
    + _TOTALS_COLS
    + " FROM s)\n"
    "SELECT state, reason_code, approved, currency, sum(items)::bigint, sum(hours), sum(amount),"
    " max(newest) FROM s GROUP BY 1, 2, 3, 4"
)

#: SUMMARY without recon.item_totals' keys: a skipped run (nothing changed) only reports.
STATE_SUMMARY = """
SELECT state, reason_code, approved, currency, count(*), sum(hours), sum(amount),
       max(xmin::text::bigint)
  FROM recon.items
 GROUP BY 1, 2, 3, 4
"""

#: recon.item_totals emptied by the run (then filled by TOTALS_FROM_WORK or TOTALS_SERIAL),
#: then recon.client_period_totals from it (migration 0028 has the same statement).
DELETE_TOTALS = "DELETE FROM recon.item_totals; DELETE FROM recon.client_period_totals"
CLIENT_PERIOD_TOTALS = """
INSERT INTO recon.client_period_totals
SELECT period_start, account_id, client_psa_id, currency,
       coalesce(sum(items) FILTER (WHERE state = 'ready'), 0),
       sum(hours) FILTER (WHERE state = 'ready'), sum(amount) FILTER (WHERE state = 'ready'),
       coalesce(sum(items) FILTER (WHERE state = 'on_hold'), 0),
       sum(hours) FILTER (WHERE state = 'on_hold'), sum(amount) FILTER (WHERE state = 'on_hold'),
       coalesce(sum(items) FILTER (WHERE state = 'billed'), 0),
       sum(hours) FILTER (WHERE state = 'billed'), sum(amount) FILTER (WHERE state = 'billed'),
       coalesce(sum(items) FILTER (WHERE age_bucket IS NOT NULL), 0),
       sum(amount) FILTER (WHERE age_bucket IS NOT NULL),
       coalesce(sum(items) FILTER (WHERE is_leakage), 0),
       sum(hours) FILTER (WHERE is_leakage), sum(amount) FILTER (WHERE is_leakage)
  FROM recon.item_totals
 GROUP BY 1, 2, 3, 4
"""


#: Every input of the reconciliation (and its own output): a rerun whose fingerprint equals the
#: one recorded at the end of the last run (same as-of date) has nothing to change. Any committed
#: insert or update gives a row a newer xmin, any delete lowers the count.
INPUT_TABLES = (
    "core.time_entries",
    "core.expenses",
    "core.contracts",
    "core.contract_milestones",
    "core.rate_cards",
    "core.people",
    # a time entry's currency is its PSA client's (psa_cur)
    "core.psa_clients",
    "core.clients",
    "core.id_map",
    "billing.schedules",
    "billing.schedule_lines",
    "billing.billed_items",
    "recon.settings",
    "recon.expense_policy",
    "recon.currencies",
    "recon.reasons",
    "recon.items",
    "ops.exceptions",
)
_COUNTS = ", ".join(
    f"(SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM {t})"
    for t in INPUT_TABLES
)
FINGERPRINT = "SELECT md5(concat_ws('|', %(as_of)s::text, " + _COUNTS + "))"

#: The fingerprint's parts, one per INPUT_TABLES entry (``FINGERPRINT`` = md5 of the as-of date
#: and these, joined by ``|``); at the end of a run only the run's own outputs are re-read
#: (recon.items, ops.exceptions): the inputs' parts are the ones read before the run computed
#: anything, so a source change committed while it ran is never mistaken for one it has seen.
FINGERPRINT_PARTS = "SELECT ARRAY[" + _COUNTS + "]"
#: The same, and (parameter ``export``: the run has its own transaction) the snapshot they were
#: read in, for the parallel workers (``SET TRANSACTION SNAPSHOT``): every worker classifies
#: exactly the data the fingerprint describes.
FINGERPRINT_PARTS_AND_SNAPSHOT = (
    "SELECT ARRAY[" + _COUNTS + "], CASE WHEN %(export)s THEN pg_export_snapshot() END"
)

#: The parallel workers' tables (migration 0015): UNLOGGED, written by a worker, read and
#: dropped by the run.
WORK_SCHEMA = "recon_work"
WORK_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'recon_work' ORDER BY 1"
#: ops.exceptions' part of the fingerprint at the end of a run (recon.items' comes with SUMMARY).
EXCEPTIONS_PART = (
    "SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM ops.exceptions"
)

LAST_FINGERPRINT = """
SELECT result ->> 'inputs_fingerprint', result
  FROM recon.runs
 WHERE finished_at IS NOT NULL
 ORDER BY finished_at DESC, run_id DESC
 LIMIT 1
"""
