"""Audits: how relevant a live engine's results are, judged by a teacher, a student or an LLM judge.

    from relkit.audit import Engine, ask_engine, draw, make_judge, query_strata, run_audit
    from relkit.audit import combine, plan_audit, ppi      # a people slice, prediction-powered estimates
"""
from relkit.audit.combined import CombinedAudit, combine
from relkit.audit.core import AuditResult, audit, run_audit
from relkit.audit.estimates import (MDE_FACTOR, PairedDifference, SystemAudit, standard_error,
                                    stratified_interval)
from relkit.audit.judges import JUDGES, PairJudge, cached_judgments, make_judge
from relkit.audit.judging import JudgedCounts, JudgedPool, judge_pool
from relkit.audit.lists import Engine, ResultLists, ask_engine, extract, read_run
from relkit.audit.people import PeopleSlice
from relkit.audit.plan import Plan, plan_audit
from relkit.audit.ppi import Estimate, Moments, classical, ppi
from relkit.audit.sampling import ALLOCATIONS, FREQUENCY, Sample, allocate, draw, query_strata
from relkit.audit.storage import AuditHistory, history, pilot_spread

__all__ = ["ALLOCATIONS", "AuditHistory", "AuditResult", "CombinedAudit", "Engine", "Estimate", "FREQUENCY", "JUDGES",
           "JudgedCounts", "JudgedPool", "MDE_FACTOR", "Moments", "PairJudge", "PairedDifference", "PeopleSlice", "Plan",
           "ResultLists", "Sample", "SystemAudit", "allocate", "ask_engine", "audit", "cached_judgments", "classical",
           "combine", "draw", "extract", "history", "judge_pool", "make_judge", "pilot_spread", "plan_audit", "ppi",
           "query_strata", "read_run", "run_audit", "standard_error", "stratified_interval"]
