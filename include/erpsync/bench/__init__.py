"""``erpsync bench``: the time-entry sync throughput benchmark.

The pack's engine against dlt's ``rest_api`` source and a plain pandas ``to_sql`` loop, on the
same sandbox firm and the same PostgreSQL server, in one command. See :mod:`erpsync.bench.runner`
and ``docs/benchmarks.md``.
"""
