-- Effective-dated contract rates (issue 15): a change order takes effect on a day
-- (CRM Opportunity.Change_Effective_Date__c), and work dated before it keeps the terms and
-- rates of the version in effect then. Rate override elements (rate_overrides jsonb) may carry
-- their own "effective_from" day inside a version.
--
-- An entry is priced by the highest usable version of its contract whose effective_from is on
-- or before the entry's date (the first usable version applies from the beginning; a version
-- recorded before this migration has no date and applies from the beginning too, as before).
-- Usable: pending, complete, adopted, or superseded after being valid (no problems): a later
-- change order supersedes a version only from its own effective day on.

ALTER TABLE core.contracts ADD COLUMN effective_from date;
COMMENT ON COLUMN core.contracts.effective_from IS
    'The day this version takes effect (a change order''s Change_Effective_Date__c); NULL: from the beginning.';

-- Which version is in effect when, per contract (history: recon.items.contract_version and rate
-- say which version and rate priced each item).
CREATE VIEW core.contract_version_periods AS
WITH v AS (
    SELECT opportunity_id, version, status, effective_from,
           CASE WHEN row_number() OVER (PARTITION BY opportunity_id ORDER BY version) = 1
                THEN NULL ELSE effective_from END AS applies_from
      FROM core.contracts
     WHERE status IN ('pending', 'complete', 'adopted')
        OR (status = 'superseded' AND problems = '[]'::jsonb)
), r AS (
    SELECT v.*,
           min(coalesce(applies_from, '-infinity'::date)) OVER (
               PARTITION BY opportunity_id ORDER BY version DESC
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS next_from
      FROM v
)
SELECT opportunity_id, version, status, effective_from, applies_from,
       next_from - 1 AS applies_to
  FROM r
 WHERE next_from IS NULL OR next_from > coalesce(applies_from, '-infinity'::date);
COMMENT ON VIEW core.contract_version_periods IS
    'Per contract, the days each version is in effect (applies_from/applies_to, NULL: open); a version a later change order replaced from its own start is not listed.';

-- The CRM mirror of the contracted rates (one row per person: the latest rate, which the PSA
-- assignment carries) says from which day it applies, so earlier work at the earlier rate is
-- not flagged rate_off_contract.
ALTER TABLE core.contract_rate_overrides ADD COLUMN effective_from date;
