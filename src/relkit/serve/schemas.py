"""The service's request and response models.

The requests' bounds come from the service's `Limits`, so their models are built per app
(`request_models(limits)`); the OpenAPI schema then states the same bounds the service enforces.

(No `from __future__ import annotations` here: pydantic reads the annotations of the models built
inside `request_models` as live objects.)
"""
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from relkit.text import BLANK



def _json_integer(value):
    # what JSON Schema calls an integer: 10 and 10.0, not true or "10" (which a lax int would take)
    if isinstance(value, (bool, str)):
        raise ValueError("expected an integer")
    return value


def json_int(**bounds):
    """An integer field with `Field` bounds (ge, le); the bounds first, so that the OpenAPI schema
    states them as minimum and maximum."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_integer)]


@dataclass(frozen=True)
class Limits:
    max_candidates: int = 1000          # items per rerank request
    max_search_k: int = 1000
    max_query_chars: int = 1000
    max_text_chars: int = 20000         # per inline item field
    max_body_bytes: int = 4_000_000      # `relkit serve --max-body-mb` 4: MB = 10^6 bytes, as `caption --max-mb`


@dataclass(frozen=True)
class RequestModels:
    rerank: type[BaseModel]
    search: type[BaseModel]


def request_models(limits: Limits) -> RequestModels:
    """The rerank and search request models with `limits`' bounds."""
    Text = Annotated[str, Field(max_length=limits.max_text_chars)]
    ItemId = Annotated[str, Field(min_length=1, max_length=256)]

    class InlineItem(BaseModel):
        """An item given in the request instead of by id."""
        model_config = ConfigDict(extra="forbid")
        item_id: ItemId | None = None
        title: Annotated[str, Field(min_length=1, max_length=limits.max_text_chars)]
        description: Text | None = None
        board_titles: Annotated[list[Text], Field(max_length=100)] | None = None
        link_title: Text | None = None
        link_description: Text | None = None

    class QueryModel(BaseModel):
        model_config = ConfigDict(extra="forbid")
        # at least one character that is not (ASCII) blank: the same rule in the schema and the check
        query: Annotated[str, Field(min_length=1, max_length=limits.max_query_chars, pattern=r"[^ \t\n\r\f\v]",
                                    description="the search query; not empty or blank")]

        @field_validator("query")
        @classmethod
        def trimmed(cls, value: str) -> str:
            return value.strip(BLANK)

    class RerankRequest(QueryModel):
        items: Annotated[list[ItemId | InlineItem], Field(min_length=1, max_length=limits.max_candidates)]
        top_k: json_int(ge=1) | None = None

    class SearchRequest(QueryModel):
        k: json_int(ge=1, le=limits.max_search_k) = 10

    return RequestModels(RerankRequest, SearchRequest)


# The responses: the handlers send what `relkit.student.fast.Scored` holds as JSON built without a
# second validation pass, so these models describe the bodies (OpenAPI, and the tests check the
# bodies against it) rather than build them.
class Scored(BaseModel):
    item_id: str
    score: float = Field(description="expected gain under the level probabilities")
    level: int = Field(description="the student's level, 1..K: its expected level cut at the cutpoints "
                                   "fit on dev (the most probable level for a student without cutpoints)")
    probabilities: list[float]
    inline: bool = False


class RerankResponse(BaseModel):
    model: str
    results: list[Scored]
    unknown_items: list[str] = Field(description="ids not in the catalog (not scored)")


class SearchResponse(BaseModel):
    model: str
    candidates: int
    results: list[Scored]


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    items: int
    relkit: str
