"""The prior of a teacher: per-level logits from features of the pair that need no training (the
cosine of query and item under a sentence-transformers bi-encoder and, by default, the text-match
features of relkit.features.text_match, each text read in its language; with `cosine+match+idf` also
the query terms' share weighted by their rarity in the catalog, whose document frequencies the prior
keeps), added to the cross-encoder's logits.

Why: a cross-encoder starts with a random head and no notion of query-item match; trained on a
few thousand judgments it learns each query's and item's usual level long before it learns the
match, and ranks items within a query worse than an untuned bi-encoder does. The prior makes the
teacher start where a linear model of those features is (its logits are `features @ weight + bias`,
a logistic regression fit to the train labels before training), so the cross-encoder only has to
learn what they miss.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from relkit.errors import RelkitError
from relkit.features.text_match import IDF_NAME, NAMES as TEXT_MATCH_NAMES, DocumentFrequencies
from relkit.tokenization import LEGACY_TOKENIZATION, TOKENIZATIONS


# what a prior can be made of (`TrainConfig.prior_features`), in the order of its weight rows
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "cosine": ("cosine",),
    "cosine+match": ("cosine", *TEXT_MATCH_NAMES),
    "cosine+match+idf": ("cosine", *TEXT_MATCH_NAMES, IDF_NAME),
}


@dataclass
class Prior:
    model: str                  # the bi-encoder: 'default' (all-MiniLM-L6-v2), a local path or a hub id
    weight: list                # (features, K): logit[k] += sum over f of feature[f] * weight[f][k] + bias[k]
    bias: list[float]
    features: list[str] = field(default_factory=lambda: ["cosine"])
    # how the text-match features cut texts (relkit.tokenization); a prior saved before it was recorded
    # read every text as English
    tokenization: str = LEGACY_TOKENIZATION
    # the catalog's document frequencies (`DocumentFrequencies.to_dict()`), for `idf_coverage`
    frequencies: dict | None = None

    def __post_init__(self) -> None:
        if self.weight and not isinstance(self.weight[0], list):   # saved before text-match priors: K floats
            self.weight = [list(self.weight)]
        self.features = list(self.features)
        known = FEATURE_SETS["cosine+match+idf"]
        unknown = [f for f in self.features if f not in known]
        if unknown or len(self.weight) != len(self.features):
            raise RelkitError(f"a prior with features {self.features} and {len(self.weight)} weight rows: "
                              f"expected one row per feature, features among {known}")
        if self.tokenization not in TOKENIZATIONS:
            raise RelkitError(f"a prior with tokenization '{self.tokenization}': expected one of "
                              f"{', '.join(TOKENIZATIONS)}")
        if IDF_NAME in self.features and self.frequencies is None:
            raise RelkitError(f"a prior with the feature {IDF_NAME} and no document frequencies to weigh terms by")

    @property
    def document_frequencies(self) -> DocumentFrequencies | None:
        return None if self.frequencies is None else DocumentFrequencies(**self.frequencies)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, K) logits from the (n, features) matrix `x` (or the n cosines of a cosine-only prior)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return x @ np.asarray(self.weight) + np.asarray(self.bias)[None, :]

    def to_dict(self) -> dict:
        out = {"model": self.model, "features": list(self.features), "tokenization": self.tokenization,
               "weight": [list(map(float, row)) for row in self.weight], "bias": list(map(float, self.bias))}
        if self.frequencies is not None:
            out["frequencies"] = self.frequencies
        return out

    @classmethod
    def fit(cls, model: str, x: np.ndarray, labels: np.ndarray, k: int,
            features: Sequence[str] = ("cosine",), tokenization: str = LEGACY_TOKENIZATION,
            frequencies: DocumentFrequencies | None = None) -> "Prior":
        """The multinomial logistic regression of the level (1..K) on the features `x` (n, features),
        made with `tokenization` (and `frequencies`, for `idf_coverage`)."""
        weight, bias = logistic_weights(x, labels, k)
        return cls(model=model, weight=weight.tolist(), bias=bias.tolist(), features=list(features),
                   tokenization=tokenization, frequencies=None if frequencies is None else frequencies.to_dict())

    def inputs(self, queries: Sequence[str], item_texts: Sequence[str], titles: Sequence[str] | None = None,
               text_vectors=None, languages: Sequence[str | None] | None = None,
               query_languages: Sequence[str | None] | None = None) -> np.ndarray:
        """(n, features): this prior's features of the pairs (see `features`)."""
        return features(self.features, self.model, queries, item_texts, titles, text_vectors,
                        tokenization=self.tokenization, languages=languages, query_languages=query_languages,
                        frequencies=self.document_frequencies)


def logistic_weights(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The multinomial logistic regression of the level (1..k) on `x` (n, columns): (columns, k)
    weights and k biases of each level's logit (0 for a level no label has)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    lr = LogisticRegression(C=100.0, max_iter=2000).fit(x, labels)
    coef, intercept = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:   # scikit-learn gives the second class's logit against the first's (0)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight, bias = np.zeros((x.shape[1], k)), np.zeros(k)
    weight[:, lr.classes_ - 1], bias[lr.classes_ - 1] = coef.T, intercept
    return weight, bias


def features(names: Sequence[str], model: str, queries: Sequence[str], item_texts: Sequence[str],
             titles: Sequence[str] | None = None, text_vectors=None, *, tokenization: str,
             languages: Sequence[str | None] | None = None,
             query_languages: Sequence[str | None] | None = None,
             frequencies: DocumentFrequencies | None = None) -> np.ndarray:
    """(n, len(names)) float64: the named prior features of each (query, item text) pair. `titles`
    are the items' titles for the title coverage (the item text stands for it where not given);
    `text_vectors(texts)`, when given, supplies the item texts' bi-encoder vectors (a workspace's cache).
    The text-match features cut texts by `tokenization`, under `by-language` each item in its language
    (`languages`, detected where None) and each query in its own (`query_languages`, where None the
    most probable of the items' languages); `idf_coverage` weighs terms by `frequencies`."""
    from relkit.features.text_match import match_features

    columns = {"cosine": cosines(model, queries, item_texts, text_vectors)}
    if IDF_NAME in names and frequencies is None:
        raise RelkitError(f"the prior feature {IDF_NAME} needs the catalog's document frequencies")
    if any(n in TEXT_MATCH_NAMES or n == IDF_NAME for n in names):   # one pass: each text read once
        match = match_features(queries, item_texts, titles, tokenization=tokenization, query_languages=query_languages,
                               text_languages=languages, frequencies=frequencies if IDF_NAME in names else None)
        columns.update({n: match[:, i] for i, n in enumerate((*TEXT_MATCH_NAMES, IDF_NAME)[:match.shape[1]])})
    return np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)


_ENCODERS: dict[str, object] = {}


def cosines(model: str, queries: Sequence[str], item_texts: Sequence[str], text_vectors=None) -> np.ndarray:
    """Cosine of each (query, item text) under the bi-encoder `model` (loaded once per process).
    `text_vectors(texts)`, when given, supplies the item texts' vectors (a workspace's cache)."""
    from relkit.features.embeddings import Encoder, pair_cosines

    if model not in _ENCODERS:
        _ENCODERS[model] = Encoder(model)
    return pair_cosines(_ENCODERS[model], queries, item_texts, text_vectors)
