"""A judge as an evaluation system: `relkit eval --system judge:NAME`."""
from __future__ import annotations

import logging

import numpy as np

from relkit.evaluate import JudgedPairs, Prediction
from relkit.judge.core import load_judge
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)


class JudgeSystem:
    """Scores judged pairs with a judge's labels, judging the pairs it has not labeled yet. An answer
    that named no level carries no information: it is scored as the uniform distribution (its
    predicted level is then level 1), and `unparsed` says how many there were."""

    def __init__(self, ws: Workspace, ref: str, show_progress: bool = True):
        self.ws = ws
        self.judge = load_judge(ws, ref)
        self.name = self.judge.name
        self.show_progress = show_progress
        self.unparsed = 0

    def predict(self, pairs: JudgedPairs) -> Prediction:
        proba = self.judge.judge(self.ws, list(zip(pairs.query_ids, pairs.item_ids)), show_progress=self.show_progress)
        missing = np.isnan(proba).any(axis=1)
        self.unparsed = int(missing.sum())
        if self.unparsed:
            logger.warning("%s: %d of %d answers named no level; scored as uniform", self.name, self.unparsed,
                           len(proba))
        proba[missing] = 1.0 / proba.shape[1]
        return Prediction(proba=proba)
