"""LLM judges: any OpenAI-compatible chat endpoint, or a local causal LM, puts (query, item) pairs
on the workspace's scale; the labels are stored like a teacher's, under the name `judge:NAME`.

    from relkit.judge import load_judge
    probs = load_judge(ws, "smol").judge(ws, [("q1", "i7")])  # (n, K), NaN rows where unparsed
"""
from relkit.judge.core import (PREFIX, Judge, JudgeRun, JudgeSpec, create_judge, judge_name, load_judge,
                               select_pairs)

__all__ = ["PREFIX", "Judge", "JudgeRun", "JudgeSpec", "create_judge", "judge_name", "load_judge", "select_pairs"]
