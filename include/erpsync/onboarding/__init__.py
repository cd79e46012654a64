"""Client onboarding: closed-won CRM contracts become ready-to-bill projects.

* :mod:`erpsync.onboarding.contracts`: read a Salesforce Opportunity as a contract and check it
  has what billing needs (billing model, currency, dates, tax profile, PO, rates, milestones,
  cap). Problems become one exception per contract, never a half-built project.
* :mod:`erpsync.onboarding.schedule`: the billing schedule of a contract version (T&M periods,
  fixed-fee milestones, retainer periods).
* :mod:`erpsync.onboarding.setup`: the setup steps (PSA project, tasks, milestones, user
  assignments at contracted rates, ERP project, schedule, CRM write-back), each recorded in
  ``ops.onboarding_steps`` and each a check-then-create by a stable reference, so a rerun after
  any failure finishes the job without duplicates.
"""
