"""Audits: how relevant a live engine's results are, judged by a teacher, a student or an LLM judge.

    from relkit.audit import Engine, ask_engine, draw, make_judge, query_strata, run_audit
"""
from relkit.audit.core import (AuditResult, audit, Comparison, Estimate, MDE_FACTOR, SystemAudit, bootstrap, history,
                               pilot_spread, run_audit, standard_error)
from relkit.audit.judges import JUDGES, Judge, cached_judgments, make_judge
from relkit.audit.lists import Engine, ResultLists, ask_engine, extract, read_run
from relkit.audit.sampling import ALLOCATIONS, FREQUENCY, Sample, allocate, draw, query_strata

__all__ = ["ALLOCATIONS", "AuditResult", "audit", "Comparison", "Engine", "Estimate", "FREQUENCY", "JUDGES", "Judge",
           "MDE_FACTOR", "ResultLists", "Sample", "SystemAudit", "allocate", "ask_engine", "bootstrap",
           "cached_judgments", "draw", "extract", "history", "make_judge", "pilot_spread", "query_strata",
           "read_run", "run_audit", "standard_error"]
