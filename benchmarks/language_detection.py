"""Language detection on real short queries: two offline detectors, each reading one query at a
time, then relkit's detection (py3langid, its texts weighed by the languages of the others) on the
same queries, one set at a time and all sets mixed as one import.

    python benchmarks/language_detection.py [--data ../shared/data] [--limit N]
        [--detectors py3langid lingua lingua-low] [--json]

Sets: XQuAD-R's questions in English, Spanish and German (1,190 each), Multi-CPR's Chinese product
queries (167) and Home Depot's English product queries (9,446 distinct). Prints, per detector and
set, the share detected as the set's language (Chinese varieties count as Chinese) and the
milliseconds per query; a detector's load (building it and its first answer) apart.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XQUAD = ("en", "es", "de")
CHINESE_VARIETIES = {"wuu": "zh", "yue": "zh", "cmn": "zh"}


def query_sets(data: Path, limit: int | None) -> dict[str, tuple[str, list[str]]]:
    """Set name -> (its language, its distinct queries in file order, the first `limit`)."""
    def distinct(texts):
        out = list(dict.fromkeys(t for t in texts if t.strip()))
        return out[:limit] if limit else out

    def jsonl(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line)["query"] for line in f if line.strip()]

    sets = {f"xquad-r {lang}": (lang, distinct(jsonl(data / "multilingual" / f"xquad_r_paragraph_{lang}.jsonl.gz")))
            for lang in XQUAD}
    sets["multi-cpr zh"] = ("zh", distinct(jsonl(data / "multilingual" / "multicpr_ecom_zh.jsonl.gz")))
    with open(data / "homedepot" / "pairs.csv", encoding="latin-1", newline="") as f:
        sets["home depot en"] = ("en", distinct(row["search_term"] for row in csv.DictReader(f)))
    return sets


def _py3langid() -> Callable[[str], str | None]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    return lambda text: identifier.classify(text)[0]


def _lingua(low: bool) -> Callable[[str], str | None]:
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        raise SystemExit("lingua is not installed: pip install lingua-language-detector (relkit's dev extra has it)")
    # models loaded up front, so that a query's time is its detection only
    builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
    detector = (builder.with_low_accuracy_mode() if low else builder).build()

    def detect(text: str) -> str | None:
        language = detector.detect_language_of(text)
        return None if language is None else language.iso_code_639_1.name.lower()
    return detect


def _relkit_alone() -> Callable[[str], str | None]:
    from relkit.languages import detect

    return lambda text: detect(text)[0]


# each detector reading one query at a time, by name
DETECTORS: dict[str, Callable[[], Callable[[str], str | None]]] = {
    "py3langid": _py3langid,                         # all of its languages
    "lingua-low": lambda: _lingua(low=True),         # all of its languages, low accuracy mode (trigrams only)
    "lingua": lambda: _lingua(low=False),            # all of its languages, high accuracy (after lingua-low,
                                                     # its load is the models lingua-low did not need)
    "relkit, one query alone": _relkit_alone,        # py3langid among relkit.languages.DETECTED
}


def measure(name: str, sets: dict[str, tuple[str, list[str]]]) -> dict:
    start = time.perf_counter()
    detect = DETECTORS[name]()
    detect("warm up")
    row = {"detector": name, "load_s": time.perf_counter() - start, "sets": {}}
    for set_name, (language, texts) in sets.items():
        start = time.perf_counter()
        found = [detect(t) for t in texts]
        seconds = time.perf_counter() - start
        right = sum(CHINESE_VARIETIES.get(f, f) == language for f in found)
        row["sets"][set_name] = {"accuracy": right / len(texts), "ms_per_query": 1000 * seconds / len(texts),
                                 "queries": len(texts)}
    return row


def relkit_together(sets: dict[str, tuple[str, list[str]]]) -> list[dict]:
    """relkit's import-time detection (`detect_languages`): each set as one import, then all mixed."""
    from relkit.languages import detect_languages

    rows = []
    for name, grouped in (("relkit, each set as one import", True), ("relkit, all sets as one import", False)):
        row = {"detector": name, "load_s": 0.0, "sets": {}}
        batches = [[s] for s in sets] if grouped else [list(sets)]
        for batch in batches:
            texts = [t for s in batch for t in sets[s][1]]
            start = time.perf_counter()
            found = detect_languages(texts)
            seconds = time.perf_counter() - start
            at = 0
            for s in batch:
                language, queries = sets[s]
                got = found[at:at + len(queries)]
                at += len(queries)
                row["sets"][s] = {"accuracy": sum(g == language for g in got) / len(queries),
                                  "ms_per_query": 1000 * seconds / len(texts), "queries": len(queries)}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="the first N distinct queries of each set")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sets = query_sets(args.data, args.limit)
    rows = [measure(name, sets) for name in args.detectors] + relkit_together(sets)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    names = list(sets)
    print(f"{'detector':32s} " + " ".join(f"{n:>14s}" for n in names) + f" {'ms/query':>9s} {'load s':>7s}")
    print(f"{'(queries)':32s} " + " ".join(f"{len(sets[n][1]):>14,}" for n in names))
    for row in rows:
        cells = [f"{row['sets'][n]['accuracy']:>14.1%}" for n in names]
        total = sum(s["queries"] for s in row["sets"].values())
        ms = sum(s["ms_per_query"] * s["queries"] for s in row["sets"].values()) / total
        print(f"{row['detector']:32s} " + " ".join(cells) + f" {ms:>9.3f} {row['load_s']:>7.1f}")


if __name__ == "__main__":
    main()
