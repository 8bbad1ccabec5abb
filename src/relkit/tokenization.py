"""Text -> terms in the text's language: the one place where BM25 (features/bm25.py), the text-match
features (features/text_match.py) and the train-query sources (query_sources.py) cut, filter and stem
words.

A tokenization has a name, and a saved student records the one its features were made with
(`FeatureConfig.tokenization`), so it never reads features made another way. Changing what a name
produces would change saved students' features: a new way gets a new name.

- `by-language` (the default): each text in its own language (`relkit.languages`). Words are runs of
  letters, digits and their combining marks, lowercased. Scripts written without spaces (Chinese,
  Japanese, Thai, Lao, Khmer, Myanmar; Korean too, whose words carry their particles) are cut by
  script, wherever they appear: a run of them gives each character (with its combining marks) and
  each pair of adjacent characters as terms, and single characters as words of a phrase. Then the language's stopwords
  are dropped (bm25s's lists) and the rest stemmed by its Snowball stemmer (PyStemmer), where it has
  them. English text comes out exactly as under `english`.
- `english`: every text as English, whatever its language: relkit's only tokenization before it
  read languages, kept so that students saved then read the same features.

The two uses differ in detail, as they always have: BM25 (`purpose="bm25"`) keeps words of two
characters or more and drops bm25s's English stopwords from English; text match and the query
sources (`purpose="match"`) keep every word and drop scikit-learn's English stopwords. Characters of
unspaced scripts are kept by both.

Why characters and pairs rather than a word segmenter: on the Chinese product queries of Multi-CPR,
BM25 over them ranks as well as over the multilingual model's SentencePiece pieces and better than
over jieba's words (docs/languages.md has the figures), needs no dictionary, and reads Japanese and
Thai the same way.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TOKENIZATIONS = ("by-language", "english")
DEFAULT_TOKENIZATION = "by-language"
LEGACY_TOKENIZATION = "english"   # what students saved before tokenizations had names were made with
PURPOSES = ("bm25", "match")

# ISO 639-1 code -> PyStemmer's Snowball algorithm
STEMMERS = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "cs": "czech", "da": "danish", "nl": "dutch",
    "en": "english", "eo": "esperanto", "et": "estonian", "fi": "finnish", "fr": "french", "de": "german",
    "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian",
    "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "nb": "norwegian", "nn": "norwegian", "fa": "persian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian", "st": "sesotho",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}
# ISO 639-1 code -> bm25s's stopword list
STOPWORDS = {
    "zh": "STOPWORDS_CHINESE", "da": "STOPWORDS_DANISH", "nl": "STOPWORDS_DUTCH", "en": "STOPWORDS_EN",
    "fr": "STOPWORDS_FRENCH", "de": "STOPWORDS_GERMAN", "it": "STOPWORDS_ITALIAN", "ko": "STOPWORDS_KOREAN",
    "no": "STOPWORDS_NORWEGIAN", "nb": "STOPWORDS_NORWEGIAN", "nn": "STOPWORDS_NORWEGIAN",
    "pt": "STOPWORDS_PORTUGUESE", "ru": "STOPWORDS_RUSSIAN", "es": "STOPWORDS_SPANISH", "sv": "STOPWORDS_SWEDISH",
    "tr": "STOPWORDS_TURKISH",
}

# Scripts written without spaces between words (Hiragana, Katakana, CJK ideographs, Hangul, Thai,
# Lao, Myanmar, Khmer), with the combining marks of their blocks.
UNSPACED = ("\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
            "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff")


def _mark_class() -> str:
    """The combining marks of the Basic Multilingual Plane as a regex class body (vowel signs of
    Devanagari, Tamil...: Python's \\w leaves them out, and would cut 'हिन्दी' apart)."""
    ranges, start, prev = [], None, None
    for c in range(0x300, 0x10000):
        if unicodedata.category(chr(c)).startswith("M"):
            if start is None:
                start = c
            elif c != prev + 1:
                ranges.append((start, prev))
                start = c
            prev = c
    ranges.append((start, prev))
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


# a run of an unspaced script (group 1), or a word: a letter or digit, then letters, digits, marks
_RUNS = re.compile(rf"([{UNSPACED}]+)|([^\W{UNSPACED}](?:[^\W{UNSPACED}]|[{_mark_class()}])*)")
_WORD = re.compile(r"\w+")


def characters(run: str) -> list[str]:
    """The characters of a run of an unspaced script, each with the combining marks that follow it
    (Thai vowel and tone marks stay on their consonant).

    >>> characters("落地窗"), characters("วิ่ง")
    (['落', '地', '窗'], ['วิ่', 'ง'])
    """
    out: list[str] = []
    for c in run:
        if out and unicodedata.category(c).startswith("M"):
            out[-1] += c
        else:
            out.append(c)
    return out


@functools.lru_cache(maxsize=None)
def _stemmer(algorithm: str):
    import Stemmer

    return Stemmer.Stemmer(algorithm)


def _sklearn_english_stopwords() -> frozenset[str]:
    """scikit-learn's English stopwords, read from the module that holds them without importing
    scikit-learn when it is not imported yet: its package imports SciPy and more (some 60 MB
    resident), which the relevance service needs for nothing else."""
    import importlib.util
    import sys

    package = None if "sklearn" in sys.modules else importlib.util.find_spec("sklearn")
    if package is not None and package.submodule_search_locations:
        file = Path(package.submodule_search_locations[0]) / "feature_extraction" / "_stop_words.py"
        if file.is_file():
            spec = importlib.util.spec_from_file_location("relkit._sklearn_stop_words", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return frozenset(module.ENGLISH_STOP_WORDS)
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@functools.lru_cache(maxsize=None)
def _stopwords(language: str | None, purpose: str) -> frozenset[str]:
    if language == "en" and purpose == "match":
        return _sklearn_english_stopwords()
    if language not in STOPWORDS:
        return frozenset()
    import bm25s.stopwords

    return frozenset(getattr(bm25s.stopwords, STOPWORDS[language]))


@dataclass(frozen=True)
class Analyzer:
    """How the text of one language becomes terms, for one purpose (`Tokenizer.analyzer` makes them).

    >>> Analyzer("de", "match").terms("Die grünen Häuser am See")
    ['grun', 'haus', 'see']
    >>> Analyzer("zh", "bm25").terms("大落地窗")    # '地' alone is a Chinese stopword
    ['大', '落', '窗', '大落', '落地', '地窗']
    """

    language: str | None     # ISO 639-1; None: no stopwords, no stemming
    purpose: str = "match"
    spaced_only: bool = False   # `english`: the words Python's \\w finds, unspaced scripts as one word

    @property
    def min_length(self) -> int:
        return 2 if self.purpose == "bm25" else 1

    @property
    def stopwords(self) -> frozenset[str]:
        return _stopwords(self.language, self.purpose)

    @property
    def stemmer(self):
        algorithm = STEMMERS.get(self.language or "")
        return _stemmer(algorithm) if algorithm else None

    def runs(self, text: str) -> list[tuple[str, bool]]:
        """(run, unspaced) of the lowercased text in order: a word, or a run of a script written without spaces."""
        text = text.lower()
        if self.spaced_only or text.isascii():   # ASCII has no unspaced script and no combining mark
            return [(w, False) for w in _WORD.findall(text)]
        return [(m.group(1) or m.group(2), m.group(1) is not None) for m in _RUNS.finditer(text)]

    def _unstemmed(self, text: str) -> list[str]:
        out: list[str] = []
        stop, shortest = self.stopwords, self.min_length
        for run, unspaced in self.runs(text):
            if not unspaced:
                if len(run) >= shortest and run not in stop:
                    out.append(run)
                continue
            chars = characters(run)
            out.extend(c for c in chars if c not in stop)
            out.extend(a + b for a, b in zip(chars, chars[1:]) if a + b not in stop)
        return out

    def terms(self, text: str) -> list[str]:
        """The text's terms in order (repeats kept): words without stopwords, stemmed."""
        words = self._unstemmed(text)
        stem = self.stemmer
        return stem.stemWords(words) if stem is not None and words else words

    def terms_of(self, texts: Sequence[str]) -> list[list[str]]:
        """`terms` of many texts, each distinct word stemmed once."""
        unstemmed = [self._unstemmed(t) for t in texts]
        stem = self.stemmer
        if stem is None:
            return unstemmed
        distinct = list({w: None for words in unstemmed for w in words})
        stems = dict(zip(distinct, stem.stemWords(distinct))) if distinct else {}
        return [[stems[w] for w in words] for words in unstemmed]

    def words(self, text: str) -> list[str]:
        """The text's words, lowercased, unstemmed, stopwords kept; an unspaced run one word per character."""
        out: list[str] = []
        for run, unspaced in self.runs(text):
            out.extend(characters(run) if unspaced else [run])
        return out

    def phrase(self, text: str) -> str:
        """The text's words one space apart, padded with a space at each end: `phrase(q) in phrase(t)`
        when t has q's words in a row.

        >>> Analyzer("en").phrase("Red  Oak-chair"), Analyzer("zh").phrase("落地窗")
        (' red oak chair ', ' 落 地 窗 ')
        """
        return " " + " ".join(self.words(text)) + " "


class Tokenizer:
    """A named tokenization (`TOKENIZATIONS`) for one purpose (`bm25` or `match`): each text's terms
    in its language.

    >>> tok = Tokenizer("by-language", "match")
    >>> tok.terms("Häuser am See", "de"), tok.terms("running shoes", "en")
    (['haus', 'see'], ['run', 'shoe'])
    >>> Tokenizer("english").terms("Häuser am See", "de")     # 'am' and 'see' are English stopwords
    ['häuser']
    """

    def __init__(self, name: str = DEFAULT_TOKENIZATION, purpose: str = "match"):
        if name not in TOKENIZATIONS:
            raise ValueError(f"unknown tokenization '{name}'; the tokenizations are {', '.join(TOKENIZATIONS)}")
        if purpose not in PURPOSES:
            raise ValueError(f"unknown tokenization purpose '{purpose}'; expected one of {', '.join(PURPOSES)}")
        self.name, self.purpose = name, purpose

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, {self.purpose!r})"

    @property
    def by_language(self) -> bool:
        return self.name == "by-language"

    def analyzer(self, language: str | None) -> Analyzer:
        if not self.by_language:
            return Analyzer("en", self.purpose, spaced_only=True)
        return Analyzer(language, self.purpose)

    def terms(self, text: str, language: str | None = None) -> list[str]:
        return self.analyzer(language).terms(text)

    def terms_of(self, texts: Sequence[str], languages: Sequence[str | None] | None = None) -> list[list[str]]:
        """The terms of each text in its language (`languages[i]`; None: no language), each analyzer's
        distinct words stemmed once."""
        if languages is None or not self.by_language:
            return self.analyzer(None).terms_of(texts)
        out: list[list[str]] = [[] for _ in texts]
        groups: dict[str | None, list[int]] = {}
        for n, language in enumerate(languages):
            groups.setdefault(language, []).append(n)
        for language, rows in groups.items():
            for n, terms in zip(rows, self.analyzer(language).terms_of([texts[r] for r in rows])):
                out[n] = terms
        return out

    def words(self, text: str, language: str | None = None) -> list[str]:
        return self.analyzer(language).words(text)

    def phrase(self, text: str, language: str | None = None) -> str:
        return self.analyzer(language).phrase(text)
