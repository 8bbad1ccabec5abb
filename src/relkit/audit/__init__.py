"""Audits: how relevant a live engine's results are, judged by a teacher, a student or an LLM judge.

    from relkit.audit import Engine, ask_engine, draw, make_judge, query_strata, run_audit
"""
from relkit.audit.core import AuditResult, audit, run_audit
from relkit.audit.estimates import (MDE_FACTOR, PairedDifference, SystemAudit, standard_error,
                                    stratified_interval)
from relkit.audit.judges import JUDGES, Judge, cached_judgments, make_judge
from relkit.audit.judging import JudgedCounts, JudgedPool, judge_pool
from relkit.audit.lists import Engine, ResultLists, ask_engine, extract, read_run
from relkit.audit.sampling import ALLOCATIONS, FREQUENCY, Sample, allocate, draw, query_strata
from relkit.audit.storage import AuditHistory, history, pilot_spread

__all__ = ["ALLOCATIONS", "AuditHistory", "AuditResult", "Engine", "FREQUENCY", "JUDGES", "Judge", "JudgedCounts",
           "JudgedPool", "MDE_FACTOR", "PairedDifference", "ResultLists", "Sample", "SystemAudit", "allocate",
           "ask_engine", "audit", "cached_judgments", "draw", "extract", "history", "judge_pool", "make_judge",
           "pilot_spread", "query_strata", "read_run", "run_audit", "standard_error", "stratified_interval"]
