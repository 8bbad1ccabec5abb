"""The query's language named by a request's Content-Language header, on a real service on loopback."""
import httpx
import numpy as np
import pytest

from test_serve import GROUPS, Server, serving_workspace
from relkit import Workspace
from relkit.languages import language_among
from relkit.serve import create_app
from relkit.student import FastScorer, FeatureBuilder, FeatureConfig, Student
from relkit.tokenization import Tokenizer

QUERY = "Bohrmaschinen für Beton"
DRILL = {"title": "Bohrmaschinen für Beton", "description": "Bohrmaschinen für Beton und Stein", "item_id": "drill"}
ITEMS = ["red-chair", "green-saw", DRILL]


@pytest.fixture
def served(shop, tmp_path):
    """The shop with one German item: 'Bohrmaschine' shares its German stem with the query's
    'Bohrmaschinen', not its English one."""
    from relkit import import_file

    german = tmp_path / "german.csv"
    german.write_text("item_id,title,description\ngerman-drill,Bohrmaschine für Beton,Bohrmaschine mit Koffer\n")
    import_file(shop, "items", german)
    return serving_workspace(shop)


def probabilities(hits) -> dict[str, list[float]]:
    return {h.item_id: list(h.probabilities) for h in hits}


def test_content_language_names_the_querys_language(served):
    # German and English stemming read the query differently ('für' is a German stopword; German
    # stems 'Bohrmaschinen' to 'bohrmaschin')
    tokenizer = Tokenizer("by-language", "match")
    assert tokenizer.terms(QUERY, "de") == ["bohrmaschin", "beton"]
    assert tokenizer.terms(QUERY, "en") != tokenizer.terms(QUERY, "de")
    assert language_among(QUERY, {"en": 1}) == "en"          # the shop's catalog is English
    with Workspace.open(served, read_only=True) as ws:
        builder = FeatureBuilder.from_workspace(ws, FeatureConfig(groups=GROUPS))
        catalog = dict(ws.fetchall("SELECT language, count(*) FROM items GROUP BY 1"))
    scorer = FastScorer(Student.load(served / "artifacts" / "student-a"), builder)
    german, english, detected = (probabilities(scorer.rank(QUERY, ITEMS, language=code)) for code in ("de", "en", None))
    assert german["drill"] != english["drill"]
    assert detected == {"de": german, "en": english}[language_among(QUERY, catalog)]

    with Server(create_app(served)) as url, httpx.Client(base_url=url, timeout=30) as http:
        def served_probabilities(headers) -> dict[str, list[float]]:
            r = http.post("/v1/rerank", json={"query": QUERY, "items": ITEMS}, headers=headers)
            assert r.status_code == 200, r.text
            return {x["item_id"]: x["probabilities"] for x in r.json()["results"]}

        for headers, expected in (({"Content-Language": "de"}, german), ({"Content-Language": "de-DE"}, german),
                                  ({"Content-Language": "en"}, english), ({}, detected)):
            got = served_probabilities(headers)
            assert got.keys() == expected.keys()
            for item, p in expected.items():
                np.testing.assert_allclose(got[item], p, atol=1e-5, err_msg=f"{headers} {item}")
        assert not np.allclose(served_probabilities({"Content-Language": "de"})["drill"], english["drill"], atol=1e-4)

        search = http.post("/v1/search", json={"query": "green saw", "k": 3}, headers={"Content-Language": "en"})
        assert search.status_code == 200 and search.json()["results"][0]["item_id"] == "green-saw"

        # search reads the named language too: its BM25 candidates and the scores of what it returns
        def searched(code) -> dict[str, list[float]]:
            r = http.post("/v1/search", json={"query": QUERY, "k": 50}, headers={"Content-Language": code})
            assert r.status_code == 200, r.text
            return {x["item_id"]: x["probabilities"] for x in r.json()["results"]}

        by_code = {code: searched(code) for code in ("de", "en")}
        assert "german-drill" in by_code["de"]
        for code, found in by_code.items():
            expected = probabilities(scorer.rank(QUERY, list(found), language=code))
            for item, p in found.items():
                np.testing.assert_allclose(p, expected[item], atol=1e-5, err_msg=f"{code} {item}")
        with Workspace.open(served, read_only=True) as ws:
            bm25 = FeatureBuilder.from_workspace(ws, FeatureConfig(groups=GROUPS)).bm25
        top = {code: list(bm25.top_k(["Bohrmaschinen"], 100, [code])[0]) for code in ("de", "en")}
        german_row = builder.items.item_ids.index("german-drill")
        assert top == {"de": [german_row], "en": []}   # the German stem finds the German title; the English not

        # read from the raw request: no declared parameter, so the OpenAPI schema does not change
        assert "content-language" not in http.get("/openapi.json").text.lower()

        for bad in ("xx-nonsense", "", "English", "de, en"):
            for path, body in (("/v1/rerank", {"query": QUERY, "items": ITEMS}), ("/v1/search", {"query": QUERY})):
                r = http.post(path, json=body, headers={"Content-Language": bad})
                assert r.status_code == 422, (bad, r.text)
                detail = r.json()["detail"][0]
                assert detail["loc"] == ["header", "Content-Language"] and detail["input"] == bad
                assert "Content-Language" in detail["msg"] and "ISO 639-1" in detail["msg"]
