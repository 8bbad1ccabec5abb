"""The student's MLP as a scikit-learn estimator over a plain feature matrix, for features of your
own (relkit's own path is `Distiller`, which builds the features and keeps their layout)."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from relkit.errors import RelkitError
from relkit.scale import LabelScale
from relkit.student.model import DevSet, StudentConfig, TrainingSet, fit_student, softmax


class StudentClassifier(ClassifierMixin, BaseEstimator):
    """`fit(X, y, sample_weight=None, eval_set=(X_dev, y_dev, dev_query_ids))`, then
    `predict_proba` (n, levels) and `predict` (levels 1..K by the decision fit on `eval_set`).

    `y` holds levels 1..K, or an (n, K) array of probabilities (a teacher's soft labels);
    `sample_weight` weighs rows (human against teacher labels). Training keeps the epoch with the lowest
    log loss of `eval_set`'s levels (`select="ndcg@10"` or `"auroc"`: that figure's best), where
    `eval_set` is (features, levels 1..K, the query of each row). The parameters are the
    student's (`StudentConfig`); `get_params`, `set_params` and `sklearn.base.clone` work as for any
    estimator, and `predict` before `fit` raises `sklearn.exceptions.NotFittedError`.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)).astype(np.float32)
    >>> y = np.where(X[:, 0] > 0, 2, 1)
    >>> queries = np.repeat(np.arange(20), 10)
    >>> clf = StudentClassifier(levels=2, hidden=(8,), epochs=5).fit(X, y, eval_set=(X, y, queries))
    >>> clf.classes_.tolist(), clf.predict_proba(X[:4]).shape, clf.n_features_in_
    ([1, 2], (4, 2), 3)
    """

    def __init__(self, levels: int = 5, hidden: tuple[int, ...] = (64, 32), epochs: int = 40, patience: int = 4,
                 batch_size: int = 512, lr: float = 2e-3, weight_decay: float = 1e-4, dropout: float = 0.1,
                 seed: int = 0, select: str = "log_loss"):
        self.levels = levels
        self.hidden = hidden
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.select = select
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.seed = seed

    def _targets(self, y, n: int, what: str) -> np.ndarray:
        y = np.asarray(y)
        k = self.levels
        if y.ndim == 1:
            if len(y) != n or not np.isin(y, np.arange(1, k + 1)).all():
                raise RelkitError(f"{what}: expected {n} levels, each a whole number 1..{k}")
            return np.eye(k, dtype=np.float32)[y.astype(int) - 1]
        if y.shape != (n, k) or (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
            raise RelkitError(f"{what}: expected levels 1..{k}, or an ({n}, {k}) array of probabilities")
        return y.astype(np.float32)

    def fit(self, X, y, sample_weight=None, eval_set=None) -> "StudentClassifier":
        if eval_set is None or len(eval_set) != 3:
            raise RelkitError("fit needs eval_set=(X_dev, levels_dev, query_ids_dev): training stops early on "
                              "the dev figure `select`")
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or not len(x):
            raise RelkitError("fit: X must be a non-empty (rows, features) matrix")
        weights = np.ones(len(x), dtype=np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        if weights.shape != (len(x),) or (weights < 0).any():
            raise RelkitError(f"fit: sample_weight must be {len(x)} non-negative numbers")
        dev_x, dev_y, dev_queries = eval_set
        dev_x = np.asarray(dev_x, dtype=np.float32)
        if dev_x.ndim != 2 or dev_x.shape[1] != x.shape[1]:
            raise RelkitError(f"fit: eval_set's X must have {x.shape[1]} columns, like X")
        dev_levels = self._targets(dev_y, len(dev_x), "eval_set levels").argmax(axis=1) + 1
        if len(dev_queries) != len(dev_x):
            raise RelkitError(f"fit: eval_set needs the query of each of its {len(dev_x)} rows")
        scale = LabelScale.default(self.levels)
        config = StudentConfig(hidden=tuple(self.hidden), epochs=self.epochs, patience=self.patience,
                               batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                               dropout=self.dropout, seed=self.seed, select=self.select)
        train = TrainingSet(x, self._targets(y, len(x), "y"), weights)
        dev = DevSet(dev_x, dev_levels, [str(q) for q in dev_queries], [str(i) for i in range(len(dev_x))])
        self.student_ = fit_student(train, dev, scale, None, config)
        self.classes_ = np.arange(1, self.levels + 1)
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "student_")
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise RelkitError(f"predict_proba: X must have {self.n_features_in_} columns")
        return softmax(self.student_.logits(x))

    def predict(self, X) -> np.ndarray:
        """Levels by the student's decision: the expected level cut at the cutpoints fit on eval_set."""
        proba = self.predict_proba(X)      # refuses an unfitted classifier first
        return self.student_.predict_levels(proba)
