"""Transfer across languages on XQuAD-R: teachers trained on English articles only, scored on other
articles in English, Spanish and German, beside the baselines and two students.

    python benchmarks/multilingual.py --e5 ~/models/e5-small [--workdir DIR] [--json OUT] [--seed 0]
    python benchmarks/multilingual.py --tiny --workdir /tmp/ml-tiny --json /tmp/ml-tiny.json   # a check in seconds

XQuAD-R has the same 48 Wikipedia articles (5 paragraphs each) and the same questions in every
language. The articles, not the questions, are split with --seed: --test-articles of them are held
out (their questions in en, es and de form the test split), --dev-articles go to dev and the rest to
train (their English questions only: nothing in Spanish or German is seen before the test). The split
is printed and written to --workdir/split.json and to --json before anything is trained.

In one 2-level workspace whose bi-encoder is the multilingual one (--e5):
- two teachers (`relkit teach`) on the English train articles, early-stopped on the English dev
  articles: one on the English MiniLM (--minilm; its prior is the English bi-encoder) and one on
  multilingual-e5-small (--e5; its prior is the workspace's encoder);
- the e5 teacher labels (`relkit label`) the pairs of the English train articles' questions, the
  only pairs the student sees (teacher labels only on training articles; only in English unless
  --student-languages says more);
- a student with the workspace's (multilingual) features distilled from those labels and the human
  ones (`relkit distill --teacher e5`), and one on the human labels alone (`relkit distill`).
Then bm25, the English bi-encoder (`embedding:` --english-encoder), the multilingual one
(`embedding`), both teachers and both students are scored on the test split by language
(`relkit eval --by language`): AUROC@2, nDCG@10, MRR and the transfer ratio (language / English),
and the checks of the target are printed:
- the e5 teacher keeps >= 97% of its English AUROC@2 in es and de;
- it beats the better (by nDCG@10) of bm25 and the multilingual bi-encoder in each language, the
  paired 95% bootstrap interval of nDCG@10 excluding 0;
- the student keeps >= 80% of the teacher's AUROC@2 gain over the better (by AUROC@2) of bm25 and the
  multilingual bi-encoder in es and de, and its AUROC@2 is above the human-only student's there.

--student-languages en,es,de has the e5 teacher also label the train articles' questions in Spanish and
German for the student (still no judgment outside English, nor a pair of a dev or test article).
--other-articles K adds, for each of those questions, its K nearest paragraphs (by the multilingual
bi-encoder) in its language from the other train articles: more pairs for the teacher to label, still
all of train articles. --student-set KEY=VALUE sets a student setting (both students; pick them on dev),
--teacher-set KEY=VALUE one of the e5 teacher (relkit teach --set, e.g. listwise_weight=1.0).
--test-pool K also scores every system on a retrieval pool: each test question's judged paragraphs and
the K best paragraphs of the other test articles in its language by bm25 and by the multilingual
bi-encoder (not relevant to it: XQuAD-R has one relevant paragraph a question), as a reranker is
measured on first stages' candidates; its figures and nDCG@10 checks are printed after the judged ones.
The dev articles' questions in Spanish and German join the dev split after the teachers are trained
(or copied): the teachers pick their step on English alone, the students their epoch on all three.
--teachers-from DIR copies the teachers of an earlier run's --workdir (its split must be this run's)
that it trained as this run would (the settings each teacher's relkit.json records: models, epochs,
tokens, batch size, seed, --teacher-set's), and trains the others: a student variant in minutes, an
e5 teacher variant without training the MiniLM one again (`--teacher-set epochs=N` trains the e5
teacher for its own number of epochs, the MiniLM one keeping --epochs). A prior_fit=after teacher
trained otherwise only in its prior's settings (prior_features, tokenization, stack_on) is copied
and its prior fit again on its cross-encoder (`relkit.teacher.train.refit_prior`): what training it
would make, in minutes.

--articles N / --questions N take a slice (the first N articles, the first N questions of each).
--tiny: tiny random-weight models (tests/tiny_models.py) for every model, one epoch, 6 articles of 4
questions: checks the script end to end in seconds, its figures mean nothing. A run trains its teachers
from scratch unless --teachers-from: give each a fresh --workdir.

The defaults are the full run's: 3 epochs at 256 tokens (a paragraph is 120 to 200 words; at 128 the
question's answer is often cut off) in batches of 16, about 2,300 English train pairs a teacher: hours
on a 2-core CPU, minutes on a GPU.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from relkit import LabelScale, Workspace, import_file, make_system
from relkit.evaluate import SystemPrediction, compare, predict_all, query_groups
from relkit.labels import load_judged_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multilingual"
LANGUAGES = ("en", "es", "de")
METRICS = ("auroc@2", "ndcg@10", "mrr")
KEEP_AUROC = 0.97       # the e5 teacher's share of its English AUROC@2 to keep in es and de
KEEP_GAIN = 0.80        # the student's share of the teacher's AUROC@2 gain over the better baseline
TEACHERS = ("minilm", "e5")


def read_language(lang: str) -> list[dict]:
    with gzip.open(DATA / f"xquad_r_paragraph_{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def article_of(row: dict) -> str:
    """The article of a row: `a12` of the paragraph id `xquadr-en-a12-p3` (the same in every language)."""
    return row["doc_id"].split("-")[2]


def question_of(row: dict) -> str:
    """The question a row asks, the same in every language: the SQuAD id after `xquadr-LANG-`."""
    return row["qid"].split("-", 2)[2]


def split_articles(articles: list[str], seed: int, test: float, dev: float) -> dict[str, list[str]]:
    """Each article in one of train, dev and test, by a seeded permutation; at least one in each."""
    order = [articles[i] for i in np.random.default_rng(seed).permutation(len(articles))]
    n_test = max(1, round(test * len(order)))
    n_dev = max(1, round(dev * len(order)))
    if n_test + n_dev >= len(order):
        raise SystemExit(f"{len(order)} articles leave none to train on with --test-articles {test} and "
                         f"--dev-articles {dev}")
    key = {a: i for i, a in enumerate(articles)}
    return {"train": sorted(order[n_test + n_dev:], key=key.get), "dev": sorted(order[n_test:n_test + n_dev], key=key.get),
            "test": sorted(order[:n_test], key=key.get)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def mrr(pairs, scores: np.ndarray) -> float | None:
    """Mean over queries with a relevant item (level 2) of 1 / the rank of the first one, items ranked
    by score (ties: in the pairs' order, by item id)."""
    by_query: dict[str, list[tuple[float, int]]] = {}
    for q, s, level in zip(pairs.query_ids, scores, pairs.labels):
        by_query.setdefault(q, []).append((float(s), int(level)))
    reciprocal = []
    for rows in by_query.values():
        if not any(level >= 2 for _, level in rows):
            continue
        ranked = sorted(range(len(rows)), key=lambda i: -rows[i][0])   # stable: ties keep their order
        reciprocal.append(1.0 / (1 + next(r for r, i in enumerate(ranked) if rows[i][1] >= 2)))
    return float(np.mean(reciprocal)) if reciprocal else None


def ratio(value: float | None, english: float | None) -> float | None:
    return None if value is None or not english else value / english


def kept(student: float | None, teacher: float | None, base: float | None) -> float | None:
    """The share of the teacher's gain over `base` that the student keeps (None without a gain)."""
    if None in (student, teacher, base) or teacher <= base:
        return None
    return (student - base) / (teacher - base)


SETTINGS = ("models", "epochs", "max_length", "batch_size", "teacher_settings")   # recorded in settings.json
# what a teacher saved before a setting was recorded trained with: a prior read texts as English, and
# prior_fit=after weighed the prior and the cross-encoder on the train pairs
BEFORE_RECORDED = {"tokenization": "english", "stack_on": "train"}
FIXED = {"model": "--e5", "name": "the run", "max_length": "--max-length",
         "batch_size": "--batch-size", "prior": "the run (the workspace's encoder)", "seed": "--seed"}


def teacher_configs(models: dict, args, teacher_settings: dict) -> dict:
    """The TrainConfig of each teacher: its base, its prior (the English bi-encoder for MiniLM, the
    workspace's encoder for e5), the run's epochs, tokens, batch size and seed, and for the e5 teacher
    --teacher-set's settings (its own epochs among them, where given)."""
    from relkit.teacher.config import TrainConfig

    priors = {"minilm": models["english_encoder"], "e5": "workspace"}
    return {name: TrainConfig(**{"model": models[name], "name": name, "epochs": args.epochs,
                                 "max_length": args.max_length, "batch_size": args.batch_size, "prior": priors[name],
                                 "seed": args.seed, **(teacher_settings if name == "e5" else {})})
            for name in TEACHERS}


def reusable_teachers(workdir: Path, split: dict, configs: dict) -> dict[str, list[str]]:
    """For each teacher, the settings in which the run in `workdir` trained it otherwise than this run
    would (read from the teacher's relkit.json): none, it is copied; only its prior's, both with
    prior_fit=after, it is copied and its prior fit again (`refit_prior`); else it is trained again.
    Refuses a run of another split, or one without both teachers."""
    if not (workdir / "split.json").exists():
        raise SystemExit(f"--teachers-from {workdir}: no split.json there (not a run's --workdir)")
    if json.loads((workdir / "split.json").read_text()) != split:
        raise SystemExit(f"--teachers-from {workdir}: its article split is not this run's")
    differ: dict[str, list[str]] = {}
    for name, config in configs.items():
        meta = workdir / "workspace" / "artifacts" / f"teacher-{name}" / "relkit.json"
        if not meta.exists():
            raise SystemExit(f"--teachers-from {workdir}: no teacher-{name} in its workspace")
        saved = json.loads(meta.read_text()).get("config", {})
        # a setting the saved teacher does not record is one it predates: it trained with the default,
        # or as relkit did before the setting was made
        saved = {**BEFORE_RECORDED, **saved}
        differ[name] = [k for k, v in vars(config).items() if saved.get(k, v) != v
                        and not (k == "stack_on" and config.prior_fit == "before")]   # read only after
    return differ


def refittable(config, differ: list[str]) -> bool:
    """Whether a teacher trained otherwise only in `differ` becomes `config`'s by fitting its prior again."""
    from relkit.teacher.train import PRIOR_SETTINGS

    return config.prior_fit == "after" and "prior_fit" not in differ and set(differ) <= set(PRIOR_SETTINGS)


def other_article_pairs(ws, rows: dict[str, list[dict]], languages: list[str], part_of: dict[str, str],
                        k: int) -> list[dict]:
    """For every train question in `languages`: its `k` nearest paragraphs (by the workspace's encoder,
    with its query/passage prefixes, through its vector cache) in its language from the other train
    articles, as unjudged pairs."""
    from relkit.features.embeddings import cached_vectors, workspace_encoder

    name = workspace_encoder(ws)
    out = []
    for lang in languages:
        train = [r for r in rows[lang] if part_of.get(article_of(r)) == "train"]
        questions = list(dict.fromkeys((r["qid"], r["query"], article_of(r)) for r in train))
        paragraphs = list(dict.fromkeys((r["doc_id"], r["doc"], article_of(r)) for r in train))
        similar = (cached_vectors(ws, name, [q for _, q, _ in questions], queries=True, desc="encoding questions")
                   @ cached_vectors(ws, name, [d for _, d, _ in paragraphs]).T)
        for (qid, query, article), scores in zip(questions, similar):
            nearest = [j for j in np.argsort(-scores, kind="stable") if paragraphs[j][2] != article][:k]
            out += [{"query_id": qid, "query": query, "item_id": paragraphs[j][0], "description": paragraphs[j][1],
                     "language": lang, "source": "other-train-article"} for j in nearest]
    return out


def retrieval_pool(ws, pairs, language_of: dict[str, str], k: int, first_stages: list):
    """The judged test pairs and, for each question, the `k` best paragraphs of the other test articles
    in its language by each of `first_stages` (systems, e.g. bm25 and the bi-encoder): XQuAD-R's task
    is to find a question's paragraph among all of them, and each question has one relevant paragraph,
    so the added pairs are at the lowest level. Returns (the pairs, in load_judged_pairs' order; a mask
    of the judged ones). As a reranker would be measured: on the candidates of first stages."""
    from relkit.labels import JudgedPairs

    items = {item["item_id"]: item for item in pairs.items}
    text = dict(zip(pairs.query_ids, pairs.queries))
    article = {q: article_of({"doc_id": i}) for q, i in zip(pairs.query_ids, pairs.item_ids)}
    added: dict[tuple[str, str], None] = {}
    for lang in sorted(set(language_of[q] for q in pairs.query_ids)):
        questions = list(dict.fromkeys(q for q in pairs.query_ids if language_of[q] == lang))
        paragraphs = sorted({i for q, i in zip(pairs.query_ids, pairs.item_ids) if language_of[q] == lang})
        cross = JudgedPairs(split=pairs.split, query_ids=[q for q in questions for _ in paragraphs],
                            queries=[text[q] for q in questions for _ in paragraphs],
                            items=[items[i] for _ in questions for i in paragraphs],
                            labels=np.ones(len(questions) * len(paragraphs), dtype=np.int64))
        for system in first_stages:
            scores = system.predict(cross).ranking_scores(ws.scale).reshape(len(questions), len(paragraphs))
            for q, row in zip(questions, scores):
                ranked = [paragraphs[j] for j in np.argsort(-row, kind="stable")]
                added.update(((q, i), None) for i in [i for i in ranked if article_of({"doc_id": i}) != article[q]][:k])
    rows = sorted([(q, i, int(level), True) for q, i, level in zip(pairs.query_ids, pairs.item_ids, pairs.labels)]
                  + [(q, i, 1, False) for q, i in added])
    pooled = JudgedPairs(split=pairs.split, query_ids=[r[0] for r in rows], queries=[text[r[0]] for r in rows],
                         items=[items[r[1]] for r in rows], labels=np.array([r[2] for r in rows], dtype=np.int64))
    return pooled, np.array([r[3] for r in rows])


def tiny_models(directory: Path, reuse: Path | None = None) -> dict[str, str]:
    """Random-weight tiny models for every role, and the multilingual encoder's prefixes declared;
    with `reuse`, an earlier tiny run's --workdir, the ones it built (its teachers' bases, as its
    settings.json names them)."""
    if reuse:
        settings = reuse / "settings.json"
        if not settings.exists():
            raise SystemExit(f"--teachers-from {reuse}: no settings.json there, so no tiny models to reuse")
        return json.loads(settings.read_text())["models"]
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build

    directory.mkdir(parents=True, exist_ok=True)
    bert, xlmr = build("bert", directory), build("xlm-roberta", directory)
    (xlmr / "relkit-encoder.json").write_text(json.dumps({"query_prefix": "query: ", "text_prefix": "passage: "}))
    return {"minilm": str(bert), "e5": str(xlmr), "english_encoder": str(bert)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--e5", default="multilingual-e5-small",
                        help="multilingual-e5-small: hub id or a built folder (../shared/tools/build_multilingual_e5.py)")
    parser.add_argument("--minilm", default="default", help="the English teacher's base (default: all-MiniLM-L6-v2)")
    parser.add_argument("--english-encoder", default="default", help="the English bi-encoder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-ws/multilingual"))
    parser.add_argument("--json", type=Path, default=None, help="also write the split, figures and checks here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the article split")
    parser.add_argument("--test-articles", type=float, default=0.5, help="share of the articles held out for test")
    parser.add_argument("--dev-articles", type=float, default=0.1, help="share of the articles for dev (English)")
    parser.add_argument("--epochs", type=float, default=3.0,
                        help="teacher epochs (relkit teach --epochs; --teacher-set epochs=N: the e5 teacher's own)")
    parser.add_argument("--max-length", type=int, default=256,
                        help="teacher tokens of question + paragraph (relkit teach --max-length)")
    parser.add_argument("--batch-size", type=int, default=16, help="teacher pairs per batch (relkit teach --batch-size)")
    parser.add_argument("--articles", type=int, default=0, help="only the first N articles (a slice; default: all)")
    parser.add_argument("--questions", type=int, default=0,
                        help="only the first N questions of each article (a slice; default: all)")
    parser.add_argument("--student-languages", default="en",
                        help="the languages of the train articles' questions the e5 teacher labels for the student, "
                             "comma-separated (default: en; never a judgment outside English)")
    parser.add_argument("--other-articles", type=int, default=0,
                        help="also K pairs a student question: its K nearest paragraphs (multilingual bi-encoder) "
                             "in its language from the other train articles (0: none)")
    parser.add_argument("--student-set", action="append", default=[],
                        help="a student setting KEY=VALUE for both students (relkit distill --set), e.g. batch_size=32")
    parser.add_argument("--test-pool", type=int, default=0,
                        help="also score every system on a retrieval pool: each test question's judged paragraphs and "
                             "the K best of the other test articles' paragraphs in its language by bm25 and by the "
                             "multilingual bi-encoder (0: none)")
    parser.add_argument("--teacher-set", action="append", default=[],
                        help="a setting KEY=VALUE of the e5 teacher (relkit teach --set), e.g. listwise_weight=1.0")
    parser.add_argument("--teachers-from", type=Path, default=None,
                        help="a finished run's --workdir with the same split: the teachers it trained as this run "
                             "would (same models and settings) are copied, the others trained")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random-weight models, one epoch, 6 articles of 4 questions (unless given)")
    args = parser.parse_args()
    student_languages = [lang.strip() for lang in args.student_languages.split(",") if lang.strip()]
    if not student_languages or set(student_languages) - set(LANGUAGES):
        parser.error(f"--student-languages: a comma-separated subset of {','.join(LANGUAGES)}")
    if args.other_articles < 0 or args.test_pool < 0:
        parser.error("--other-articles and --test-pool: a number of paragraphs, 0 or more")
    from relkit.config import parse_sets
    from relkit.errors import RelkitError
    from relkit.student.model import StudentConfig
    from relkit.teacher.config import TrainConfig

    try:
        student_settings = parse_sets(args.student_set, StudentConfig)
        teacher_settings = parse_sets(args.teacher_set, TrainConfig)
        for key in sorted(set(teacher_settings) & set(FIXED)):
            parser.error(f"--teacher-set {key}: set by {FIXED[key]}, not here")
        StudentConfig(**student_settings), TrainConfig(**teacher_settings)   # values checked before anything is written
    except RelkitError as e:
        parser.error(f"--student-set / --teacher-set: {e}")
    logging.basicConfig(format="%(message)s")   # relkit's progress: dev evaluations, bars, scoring
    logging.getLogger("relkit").setLevel(logging.INFO)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    ws_path = args.workdir / "workspace"
    if (ws_path / "relkit.duckdb").exists():
        raise SystemExit(f"{ws_path} exists: give a fresh --workdir (a run trains its teachers from scratch)")
    models = {"minilm": args.minilm, "e5": args.e5, "english_encoder": args.english_encoder}
    if args.tiny:
        models = tiny_models(args.workdir / "models", reuse=args.teachers_from)
        args.epochs = 1.0
        args.max_length = min(args.max_length, 64)
        args.articles, args.questions = args.articles or 6, args.questions or 4

    rows = {lang: read_language(lang) for lang in LANGUAGES}
    articles = list(dict.fromkeys(article_of(r) for r in rows["en"]))
    for lang in LANGUAGES[1:]:
        if list(dict.fromkeys(article_of(r) for r in rows[lang])) != articles:
            raise SystemExit(f"xquad_r_paragraph_{lang}: not the same articles as English")
    if args.articles or args.questions:   # a slice: the first articles, the first questions of each
        articles = articles[:args.articles or None]
        first: dict[str, list[str]] = {}
        for r in rows["en"]:
            asked = first.setdefault(article_of(r), [])
            if question_of(r) not in asked and len(asked) < (args.questions or len(rows["en"])):
                asked.append(question_of(r))
        keep = {q for a in articles for q in first[a]}
        rows = {lang: [r for r in rs if question_of(r) in keep] for lang, rs in rows.items()}
    split = split_articles(articles, args.seed, args.test_articles, args.dev_articles)
    part_of = {a: part for part, names in split.items() for a in names}
    questions = {part: len({r["qid"] for r in rows["en"] if part_of.get(article_of(r)) == part}) for part in split}
    record = {"seed": args.seed, "articles": split, "english_questions": questions,
              "train_languages": ["en"], "test_languages": list(LANGUAGES)}
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "split.json").write_text(json.dumps(record, indent=2))
    out = {"split": record, "models": models, "epochs": args.epochs, "max_length": args.max_length,
           "batch_size": args.batch_size, "student_languages": student_languages,
           "other_articles": args.other_articles, "test_pool": args.test_pool, "student_settings": student_settings,
           "teacher_settings": teacher_settings,
           "student_dev_languages": list(LANGUAGES), "languages": None, "checks": None}
    configs = teacher_configs(models, args, teacher_settings)
    reuse = reusable_teachers(args.teachers_from, record, configs) if args.teachers_from else {}
    (args.workdir / "settings.json").write_text(json.dumps({k: out[k] for k in SETTINGS}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    progress(f"articles (seed {args.seed}): train {len(split['train'])} ({questions['train']} English questions), "
             f"dev {len(split['dev'])} ({questions['dev']}), test {len(split['test'])} "
             f"({questions['test']} in each of {', '.join(LANGUAGES)}); written to {args.workdir / 'split.json'}")
    progress(f"test articles: {' '.join(split['test'])}")

    files = args.workdir / "data"
    files.mkdir(exist_ok=True)
    imports = [("train", "en"), ("dev", "en")] + [("test", lang) for lang in LANGUAGES]
    later = [("dev", lang) for lang in LANGUAGES if lang != "en"]      # after the teachers: the students' dev
    with Workspace.create(ws_path, LabelScale.default(2), encoder=models["e5"]) as ws:
        for part, lang in imports:
            path = write_jsonl(files / f"{lang}-{part}.jsonl", [r for r in rows[lang] if part_of.get(article_of(r)) == part])
            result = import_file(ws, "judgments", path, format="xquad-r", split=part)
            progress(f"imported {path.name}: {result.added:,} judgments of {result.new_queries:,} queries, pinned to {part}")
        # the pairs the e5 teacher labels for the student: the train articles' pairs, their English
        # questions judged (above), those of --student-languages' other languages with no judgment
        pair_rows = []
        for lang in student_languages:
            for r in rows[lang]:
                if part_of.get(article_of(r)) != "train":
                    continue
                pair_rows.append({"query_id": r["qid"], "item_id": r["doc_id"], "source": "train-article"} if lang == "en"
                                 else {"query_id": r["qid"], "query": r["query"], "item_id": r["doc_id"],
                                       "description": r["doc"], "language": lang, "source": "train-article"})
        if args.other_articles:
            pair_rows += other_article_pairs(ws, rows, student_languages, part_of, args.other_articles)
        pairs_file = write_jsonl(files / "train-pairs.jsonl", pair_rows)
        import_file(ws, "pairs", pairs_file, split="train")
        progress(f"{len(pair_rows):,} train-article pairs for the e5 teacher to label ({', '.join(student_languages)}"
                 + (f"; {args.other_articles} of other train articles a question" if args.other_articles else "") + ")")

        from relkit.teacher import train_teacher
        from relkit.teacher.train import refit_prior

        for name in TEACHERS:
            config = configs[name]
            if name in reuse and (not reuse[name] or refittable(config, reuse[name])):
                source = args.teachers_from / "workspace" / "artifacts" / f"teacher-{name}"
                shutil.copytree(source, ws.artifacts / f"teacher-{name}")
                progress(f"teacher {name}: copied from {source}, not trained again")
                if reuse[name]:
                    progress(f"teacher {name}: its prior fit again ({', '.join(reuse[name])} differ)")
                    refit_prior(ws, name, **{k: getattr(config, k) for k in reuse[name]})
                continue
            if name in reuse:
                progress(f"teacher {name}: {args.teachers_from}'s was trained with another "
                         f"{', '.join(reuse[name])}: trained here")
            progress(f"training the {name} teacher on {questions['train']} English questions: {config}")
            result = train_teacher(ws, config)
            progress(f"teacher {name}: {result.steps} steps in {result.seconds / 60:.1f} min, best dev step "
                     f"{result.best_step}")

        for part, lang in later:
            path = write_jsonl(files / f"{lang}-{part}.jsonl", [r for r in rows[lang] if part_of.get(article_of(r)) == part])
            result = import_file(ws, "judgments", path, format="xquad-r", split=part)
            progress(f"imported {path.name}: {result.added:,} judgments of {result.new_queries:,} queries, pinned to "
                     f"{part} (the students' epoch; the teachers are done)")

        from relkit.labeling import label_pairs
        from relkit.student.distill import Distiller

        progress(label_pairs(ws, "e5").summary())
        base = StudentConfig(**{**student_settings, "seed": args.seed})
        for name, teacher, config in (("e5", "e5", base), ("human", None, replace(base, human_weight=1.0))):
            distiller = Distiller(ws, teacher)
            progress(f"distilling the {name} student: {distiller.available:,} teacher-labeled pairs, "
                     f"{distiller.human_pairs:,} human ones")
            student = distiller.train(None if teacher else 0, config)
            student.save(ws.artifacts / f"student-{name}")
            distiller.close()

        systems = {"bm25": "bm25", "english-bi-encoder": f"embedding:{models['english_encoder']}",
                   "multilingual-bi-encoder": "embedding", "teacher-minilm": "teacher:minilm",
                   "teacher-e5": "teacher:e5", "student-e5": "student:e5", "student-human": "student:human"}
        pairs = load_judged_pairs(ws, "test")
        groups = {"language": query_groups(ws, "language", "test")}
        judged = np.ones(len(pairs), dtype=bool)
        if args.test_pool:
            pairs, judged = retrieval_pool(ws, pairs, groups["language"], args.test_pool,
                                           [make_system("bm25", ws), make_system("embedding", ws)])
            progress(f"retrieval pool: {int((~judged).sum()):,} pairs of other test articles' paragraphs added to the "
                     f"{int(judged.sum()):,} judged ones (the {args.test_pool} best of each question by bm25 and by "
                     "the multilingual bi-encoder)")
        progress(f"scoring {len(pairs):,} test pairs with {len(systems)} systems")
        scored = dict(zip(systems, predict_all(pairs, [make_system(spec, ws) for spec in systems.values()])))
        scale = ws.scale

    judged_rows = np.flatnonzero(judged)
    views = {"judged": (pairs.take(judged_rows), {name: SystemPrediction(s.name, s.prediction.take(judged_rows), s.seconds)
                                           for name, s in scored.items()})}
    if args.test_pool:
        views["pool"] = (pairs, scored)
    figures = {view: language_figures(p, s, scale, groups) for view, (p, s) in views.items()}
    checks = _checks(*views["judged"], scale, groups, figures["judged"])
    out.update(languages=figures["judged"], checks=checks)
    if args.test_pool:
        pool_checks = _ndcg_checks(*views["pool"], scale, groups, figures["pool"], "over the retrieval pool")
        out["pool"] = {"k": args.test_pool, "pairs": len(pairs), "added": int((~judged).sum()),
                       "languages": figures["pool"], "checks": pool_checks}
    out["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))

    print(f"\nheld-out articles: {', '.join(split['test'])}; ratio: the language's figure / English's")
    for view, title in (("judged", "the judged pairs (each question's five paragraphs)"),
                        ("pool", f"the retrieval pool (the judged pairs and the {args.test_pool} best paragraphs of "
                                 "other test articles by bm25 and by the multilingual bi-encoder)")):
        if view not in figures:
            continue
        print(f"\n{title}:")
        header = (f"{'system':<26}{'lang':<6}" + "".join(f"{k:>10}" for k in METRICS)
                  + "".join(f"{k + '/en':>13}" for k in METRICS))
        print(header)
        for name in systems:
            for lang in LANGUAGES:
                m = figures[view][lang][name]
                print(f"{name:<26}{lang:<6}" + "".join(_cell(m[k], 10) for k in METRICS)
                      + "".join(_cell(m["ratio"][k], 13) for k in METRICS))
    print("\nchecks:")
    for c in checks + (out["pool"]["checks"] if args.test_pool else []):
        print(f"  [{'pass' if c['pass'] else 'FAIL'}] {c['check']}: {c['detail']}")
    progress("done" + (f"; figures in {args.json}" if args.json else ""))


def language_figures(pairs, scored: dict, scale, groups: dict) -> dict[str, dict[str, dict]]:
    """{language: {system: {auroc@2, ndcg@10, mrr, ratio: each over English's}}} of `pairs`' queries."""
    by_language = compare(pairs, list(scored.values()), scale, groups=groups).by["language"]
    figures: dict[str, dict[str, dict]] = {}
    for lang in LANGUAGES:
        if lang not in by_language:
            raise SystemExit(f"no test query in '{lang}'")
        rows_of = np.array([groups["language"][q] == lang for q in pairs.query_ids])
        part = pairs.take(np.flatnonzero(rows_of))
        figures[lang] = {}
        for (name, s), result in zip(scored.items(), by_language[lang].results):
            scores = s.prediction.ranking_scores(scale)[rows_of]
            figures[lang][name] = {"auroc@2": result.metrics["auroc@2"], "ndcg@10": result.metrics["ndcg@10"],
                                   "mrr": mrr(part, scores)}
    for lang in LANGUAGES:
        for name, m in figures[lang].items():
            m["ratio"] = {k: ratio(m[k], figures["en"][name][k]) for k in METRICS}
    return figures


def _cell(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"


def _better(figures: dict, lang: str, metric: str) -> str:
    """The better of bm25 and the multilingual bi-encoder in `lang` by `metric` (bm25 on a tie)."""
    a, b = figures[lang]["bm25"][metric], figures[lang]["multilingual-bi-encoder"][metric]
    return "multilingual-bi-encoder" if (b or 0.0) > (a or 0.0) else "bm25"


def _ndcg_checks(pairs, scored: dict, scale, groups: dict, figures: dict, where: str = "") -> list[dict]:
    """The e5 teacher against the better (by nDCG@10) of bm25 and the multilingual bi-encoder in each
    language: its paired 95% bootstrap interval of nDCG@10 above 0."""
    checks = []
    for lang in LANGUAGES:
        better = _better(figures, lang, "ndcg@10")
        paired = compare(pairs, [scored[better], scored["teacher-e5"]], scale, groups=groups)
        interval = paired.by["language"][lang].results[1].vs_first
        checks.append({"check": f"teacher-e5 beats {better} (the better by nDCG@10) in {lang}{' ' + where if where else ''}, "
                                "paired 95% nDCG@10 interval above 0", "language": lang, "baseline": better,
                       "interval": interval.to_dict(), "pass": bool(interval.low > 0), "detail": f"{interval:+.4f}"})
    return checks


def _checks(pairs, scored: dict, scale, groups: dict, figures: dict) -> list[dict]:
    """The target's checks, each {"check", "pass", "detail", and its figures}."""
    checks = []
    en = figures["en"]["teacher-e5"]["auroc@2"]
    for lang in LANGUAGES[1:]:
        share = ratio(figures[lang]["teacher-e5"]["auroc@2"], en)
        checks.append({"check": f"teacher-e5 keeps >= {KEEP_AUROC:.0%} of its English AUROC@2 in {lang}",
                       "language": lang, "value": share, "pass": share is not None and share >= KEEP_AUROC,
                       "detail": "-" if share is None else f"{share:.1%}"})
    checks += _ndcg_checks(pairs, scored, scale, groups, figures)
    for lang in LANGUAGES[1:]:
        better = _better(figures, lang, "auroc@2")
        m = {name: figures[lang][name]["auroc@2"] for name in (better, "teacher-e5", "student-e5", "student-human")}
        share = kept(m["student-e5"], m["teacher-e5"], m[better])
        checks.append({"check": f"student-e5 keeps >= {KEEP_GAIN:.0%} of teacher-e5's AUROC@2 gain over {better} in "
                                f"{lang}", "language": lang, "baseline": better, "value": share,
                       "pass": share is not None and share >= KEEP_GAIN,
                       "detail": "no gain to keep" if share is None else f"{share:.1%}"})
        beats = None not in (m["student-e5"], m["student-human"]) and m["student-e5"] > m["student-human"]
        checks.append({"check": f"student-e5 beats student-human in {lang} (AUROC@2)", "language": lang,
                       "pass": bool(beats), "detail": f"{_cell(m['student-e5'], 0)} vs {_cell(m['student-human'], 0)}"})
    return checks


if __name__ == "__main__":
    main()
