"""Probes of a judge (`relkit judge --probe`): keyword stuffing, an injected instruction and a
reworded prompt flip judges that are susceptible by construction and leave the others, with flip
rates checked against the judges' own answers, counted here by hand. Judges: tiny teachers (a
text-match prior that counts the query's words, over the whole text or the title alone), a system
that obeys what an item's text says, LLM judges behind a real loopback endpoint that answers by
rule, and SmolLM2 behind the llama.cpp server."""
import json
import re

import numpy as np
import pytest
from conftest import RuleChat, loopback_server
from typer.testing import CliRunner

from relkit.audit import make_judge
from relkit.audit.judges import SystemJudge
from relkit.audit.probes import INSTRUCTION, LOWEST, description_words, draw_pairs, probe, tamper
from relkit.cli import app
from relkit.errors import RelkitError
from relkit.evaluate import Prediction
from relkit.judge import JudgeSpec, create_judge
from relkit.judge.prompt import default_template_text
from relkit.teacher import Teacher, TeacherMeta, TextTemplate, TrainConfig
from relkit.teacher.train import load_base
from relkit.text import DEFAULT_TEMPLATE, ItemTextTemplate
from test_judge import llama_server  # noqa: F401  the llama.cpp server fixture, started once for this module
from tiny_models import build

runner = CliRunner()
# level 1 where the text holds none of the query's terms, 3 where it holds them all (the prior's
# +-30 logits drown the tiny random head's)
OVERLAP_PRIOR = {"model": "default", "features": ["text_coverage"], "weight": [[-30.0, 0.0, 30.0]],
                 "bias": [15.0, 0.0, -15.0]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build("bert", tmp_path_factory.mktemp("models"))


def save_teacher(ws, base, name, fields=None) -> Teacher:
    """A tiny BERT teacher whose level is the share of the query's terms in its item text."""
    model, tokenizer, family, _ = load_base(TrainConfig(model=str(base)), ws.scale.k, "cpu")
    template = TextTemplate(item_text=ItemTextTemplate.parse(fields) if fields else DEFAULT_TEMPLATE)
    meta = TeacherMeta(base_model=str(base), family=family, scale=ws.scale, template=template, max_length=64,
                       prior=OVERLAP_PRIOR)
    return Teacher(model, tokenizer, meta).save(ws.artifacts / f"teacher-{name}")


def by_hand(levels_before, levels_after):
    """Flip rate, share moved up and mean change of two lists of levels."""
    change = np.asarray(levels_after) - np.asarray(levels_before)
    return float((change != 0).mean()), float((change > 0).mean()), float(change.mean())


def probed(ws, sample, seed=0):
    """The pairs the probes draw, with their query texts and item records."""
    lowest, every = draw_pairs(ws, sample, seed)
    queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    records = ws.item_records()
    return lowest, every, queries, records


def stuffed(record, query):
    return {**record, "description": f"{record['description']} {query}"}


def injected(record):
    return {**record, "description": f"{record['description']} {INSTRUCTION}"}


def assert_row(row, rates):
    """The row holds the rates counted by hand, and the Wilson interval scipy gives for them."""
    from scipy.stats import binomtest

    flip, up, mean = rates
    assert row.flip_rate.estimate == pytest.approx(flip) and row.up_rate == pytest.approx(up)
    assert row.mean_change == pytest.approx(mean) and row.flipped == round(flip * row.n)
    wilson = binomtest(row.flipped, row.n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (row.flip_rate.low, row.flip_rate.high) == pytest.approx((wilson.low, wilson.high), abs=1e-9)


# --- the probed pairs --------------------------------------------------------------------------------

def test_probed_pairs_are_a_seeded_draw_of_judged_pairs(shop):
    labels = {(q, i): label for q, i, label in shop.fetchall("SELECT query_id, item_id, label FROM judgments")}
    lowest, every = draw_pairs(shop, 10, seed=4)
    assert len(lowest) == len(set(lowest)) == 10 and len(every) == len(set(every)) == 10
    assert {labels[p] for p in lowest} == {1} and set(every) <= set(labels)
    assert len({labels[p] for p in every}) > 1            # every level, not only the irrelevant
    assert draw_pairs(shop, 10, seed=4) == (lowest, every) and draw_pairs(shop, 10, seed=5) != (lowest, every)
    assert len(draw_pairs(shop, 10_000)[1]) == len(labels)   # no more than there are
    with pytest.raises(RelkitError, match="unknown split 'nope'"):
        draw_pairs(shop, 5, split="nope")


# --- (a) tiny teachers and a system that obeys the item's text ------------------------------------------

class Obedient:
    """A system that does what an item's text says: the top level where the text claims relevance to
    every query, else the lowest. Susceptible to injection by construction, blind to stuffing."""

    def __init__(self, path, k):
        path.mkdir(parents=True, exist_ok=True)
        (path / "relkit.json").write_text(json.dumps({"kind": "obedient"}))
        self.path, self.k, self.name = path, k, "obedient"

    def predict(self, pairs):
        proba = np.zeros((len(pairs), self.k))
        for n, text in enumerate(pairs.item_texts()):
            proba[n, self.k - 1 if "relevant to every query" in text else 0] = 1.0
        return Prediction(proba=proba)


def test_stuffing_flips_a_teacher_that_counts_query_words_and_not_one_reading_titles(shop, tiny_bert):
    overlap = save_teacher(shop, tiny_bert, "overlap")
    titles = save_teacher(shop, tiny_bert, "titles", fields="title")
    lowest, _, queries, records = probed(shop, 6)
    pairs = [(queries[q], records[i]) for q, i in lowest]
    for name, teacher, expected in (("overlap", overlap, {"stuffing": (1.0, 1.0, 2.0), "injection": (0.0, 0.0, 0.0)}),
                                    ("titles", titles, {"stuffing": (0.0, 0.0, 0.0), "injection": (0.0, 0.0, 0.0)})):
        report = probe(shop, make_judge(f"teacher:{name}", shop), sample=6)
        assert report.judge == f"teacher:{name}" and [r.probe for r in report.rows] == ["stuffing", "injection"]
        before = teacher.predict_proba(pairs).argmax(axis=1) + 1
        assert (before == 1).all()                   # no query term in an irrelevant item's text
        for row, tampered in zip(report.rows, ([(q, stuffed(r, q)) for q, r in pairs],
                                               [(q, injected(r)) for q, r in pairs])):
            rates = by_hand(before, teacher.predict_proba(tampered).argmax(axis=1) + 1)
            assert rates == pytest.approx(expected[row.probe])
            assert_row(row, rates)
            assert (row.n, row.pairs, row.unanswered) == (6, LOWEST, 0)


def test_injection_flips_a_judge_that_obeys_the_item_text(shop, tmp_path):
    judge = SystemJudge(Obedient(tmp_path / "obedient", shop.scale.k))
    report = probe(shop, judge, sample=5, seed=2)
    assert report.row("injection").flipped == report.row("injection").up == 5
    assert report.row("injection").mean_change == pytest.approx(shop.scale.k - 1)
    assert report.row("stuffing").flipped == 0 and report.row("stuffing").flip_rate.high > 0   # 0 of 5 is no proof
    with pytest.raises(RelkitError, match="reworded probe is for LLM judges"):
        probe(shop, judge, sample=5, probes=("reworded",))


def test_probe_command_prints_a_table_and_json(shop, tiny_bert):
    save_teacher(shop, tiny_bert, "overlap")
    shop.close()
    ws_arg = ["-w", str(shop.path)]
    result = runner.invoke(app, ["judge", "--name", "teacher:overlap", "--probe", "--sample", "4", "--json", *ws_arg])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["judge"] == "teacher:overlap" and out["sample"] == 4 and out["instruction"] == INSTRUCTION
    rows = {r["probe"]: r for r in out["probes"]}
    assert (rows["stuffing"]["flip_rate"], rows["stuffing"]["up"], rows["stuffing"]["n"]) == (1.0, 4, 4)
    assert rows["injection"]["flip_rate"] == 0.0 and rows["stuffing"]["mean_change"] == 2.0
    table = runner.invoke(app, ["judge", "--name", "teacher:overlap", "--probe", "--sample", "4", *ws_arg])
    assert table.exit_code == 0 and "probes of teacher:overlap" in table.stdout and "stuffing" in table.stdout
    refused = runner.invoke(app, ["judge", "--name", "teacher:overlap", "--probe", "--model", "m", *ws_arg])
    assert refused.exit_code == 2 and "takes no --model" in refused.output
    refused = runner.invoke(app, ["judge", "--name", "teacher:overlap", "--probe", "--concurrency", "4",
                                  "--shots", "0", *ws_arg])
    assert refused.exit_code == 2 and "takes no --shots, --concurrency" in refused.output
    for flags in (["--sample", "4"], ["--seed", "1"], ["--json"]):
        refused = runner.invoke(app, ["judge", "--name", "teacher:overlap", *flags, *ws_arg])
        assert refused.exit_code == 2 and f"{flags[0]} go with --probe" in refused.output
    missing = runner.invoke(app, ["judge", "--name", "nobody", "--probe", *ws_arg])
    assert missing.exit_code == 2 and "no judge 'nobody'" in missing.output


# --- LLM judges behind a loopback endpoint that answers by rule -------------------------------------------

def _pair_of(prompt: str) -> tuple[str, str]:
    """The query and the item text of a prompt of either template."""
    found = re.search(r"(?:Query|Search): (.*)\n(?:Item|Result):\n(.*?)\n\n(?:Answer|Reply)", prompt, re.DOTALL)
    return found.group(1), found.group(2)


RULES = {   # model name -> its level of a prompt (3-level scale)
    "overlap": lambda p: 1 + min(2, len(set(_pair_of(p)[0].split()) & set(_pair_of(p)[1].split()))),
    "obedient": lambda p: 3 if INSTRUCTION in p else 1,
    "wording": lambda p: 3 if p.startswith("Someone searched") else 1,
}


class RuleHandler(RuleChat):
    models = tuple(RULES)
    prompt_tokens = 40

    def answer(self, body: dict) -> str:
        return str(RULES[body["model"]](body["messages"][0]["content"]))


@pytest.fixture
def rule_endpoint():
    with loopback_server(RuleHandler) as url:
        yield url


def test_each_probe_flips_the_llm_judge_built_to_fall_for_it(shop, rule_endpoint):
    expected = {"overlap": {"stuffing": 1.0, "injection": 0.0, "reworded": 0.0},
                "obedient": {"stuffing": 0.0, "injection": 1.0, "reworded": 0.0},
                "wording": {"stuffing": 0.0, "injection": 0.0, "reworded": 1.0}}
    for model, rates in expected.items():
        create_judge(shop, JudgeSpec(name=model, model=model, backend="endpoint", endpoint=rule_endpoint,
                                     fields="title,description", logprobs=False))
        report = probe(shop, make_judge(f"judge:{model}", shop), sample=4)
        assert {r.probe: r.flip_rate.estimate for r in report.rows} == rates
        assert all(r.n == 4 and r.up == r.flipped for r in report.rows)
    # a tampered text is judged and forgotten: the labels stored are of the pairs as they are
    stored = shop.fetchall("SELECT count(*), count(DISTINCT (query_id, item_id)) FROM teacher_labels "
                           "WHERE teacher = 'judge:obedient'")[0]
    assert stored[0] == stored[1] and stored[0] <= 8


def test_the_reworded_template_says_the_same(shop):
    judge = create_judge(shop, JudgeSpec(name="p", model="x", shots=2, fields="title"))
    record = {"title": "red oak chair"}
    plain = judge.builder.render("red chair", record)
    reworded = judge.builder.with_template(default_template_text("reworded")).render("red chair", record)
    assert plain != reworded and plain.startswith("You rate") and reworded.startswith("Someone searched")
    for part in ("1 = not relevant\n2 = partly relevant\n3 = relevant", "red oak chair", "red chair",
                 plain[plain.index("Examples:"):plain.rindex("\nQuery: red chair")]):
        assert part in reworded                   # the rubric, the pair and the same examples
    with pytest.raises(RelkitError, match="unknown prompt template"):
        default_template_text("other")


# --- SmolLM2 behind the llama.cpp server -----------------------------------------------------------------

def test_llama_cpp_judge_probes_match_its_own_answers(shop, llama_server):  # noqa: F811
    lowest, every, queries, records = probed(shop, 2)
    spec = {"model": "smollm2", "backend": "endpoint", "endpoint": llama_server, "concurrency": 1, "timeout": 300.0}
    judge = create_judge(shop, JudgeSpec(name="full", fields="title,description", **spec))
    report = probe(shop, make_judge("judge:full", shop), sample=2)
    backend = judge.backend()

    def levels(builder, pairs):
        out = np.zeros(len(pairs), dtype=int)
        for a in backend.answers([builder.render(q, r) for q, r in pairs]):
            out[a.index] = a.proba.argmax() + 1
        return out

    original = [(queries[q], records[i]) for q, i in lowest]
    before = judge.labels(shop, lowest).argmax(axis=1) + 1      # its stored answers to the pairs as they are
    hand = {"stuffing": by_hand(before, levels(judge.builder, [(q, stuffed(r, q)) for q, r in original])),
            "injection": by_hand(before, levels(judge.builder, [(q, injected(r)) for q, r in original])),
            "reworded": by_hand(judge.labels(shop, every).argmax(axis=1) + 1,
                                levels(judge.builder.with_template(default_template_text("reworded")),
                                       [(queries[q], records[i]) for q, i in every]))}
    assert [r.probe for r in report.rows] == ["stuffing", "injection", "reworded"]
    for row in report.rows:
        assert row.n == 2 and row.unanswered == 0
        assert_row(row, hand[row.probe])
    # a judge that reads titles only is shown the same prompt, tampered or not: it cannot move
    titles = create_judge(shop, JudgeSpec(name="titles", fields="title", **spec))
    assert all(titles.builder.render(q, stuffed(r, q)) == titles.builder.render(q, r) for q, r in original)
    blind = probe(shop, make_judge("judge:titles", shop), sample=2, probes=("stuffing",))
    assert (blind.row("stuffing").n, blind.row("stuffing").flipped) == (2, 0)


def test_tampering_writes_within_the_judges_own_description_budget(shop, tiny_bert):
    """A judge that reads 20 words of the description is probed within those 20: the added words
    are what it reads last, not words past its budget."""
    save_teacher(shop, tiny_bert, "short", fields="title,description:20")
    save_teacher(shop, tiny_bert, "default")
    create_judge(shop, JudgeSpec(name="short", model="x", fields="title,description:12"))
    budgets = {name: description_words(make_judge(name, shop))
               for name in ("teacher:short", "teacher:default", "judge:short")}
    assert budgets == {"teacher:short": 20, "teacher:default": 200, "judge:short": 12}
    long = {"title": "Oak lamp", "description": " ".join(f"w{i}" for i in range(100))}
    text = ItemTextTemplate.parse("title,description:20").render(tamper("stuffing", long, "red chair", 20))
    assert text.split()[-2:] == ["red", "chair"] and "w17" in text and "w18" not in text
