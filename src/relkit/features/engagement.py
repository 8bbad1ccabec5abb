"""Engagement-derived item text: the tokens of the queries that led people to an item.

`refresh_engaged_queries` recomputes the workspace's `engaged_queries` table in one DuckDB
statement: over a window of days ending at the latest engagement (or `as_of`), each
(query, item) row's engagement is clicks + saves + long clicks; every query is cut into
lowercased word tokens (letters and digits of any script), English stopwords are dropped, each
token scores the sum of the engagement of the queries it came from, and an item keeps its
`top_n` tokens by that score (ties by token), deduplicated. The item text field
`engaged_queries` reads the table. It is refreshed after each engagement import, with the
settings last used (stored in the workspace meta).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from relkit.errors import RelkitError
from relkit.workspace import Workspace

META_KEY = "engaged_queries"


@dataclass(frozen=True)
class EngagedQueriesConfig:
    top_n: int = 8                 # tokens kept per item
    window_days: int = 730         # engagement counted over this many days
    as_of: str | None = None       # the window's end (ISO date); None = the latest engagement

    def __post_init__(self) -> None:
        if self.top_n < 1 or self.window_days < 1:
            raise RelkitError("engaged queries: top_n and window_days must be at least 1")
        if self.as_of is not None:
            try:
                datetime.fromisoformat(self.as_of)
            except ValueError:
                raise RelkitError(f"engaged queries: as_of must be an ISO date such as 2026-01-31, "
                                  f"not '{self.as_of}'") from None


def stored_config(ws: Workspace) -> EngagedQueriesConfig:
    raw = ws.get_meta(META_KEY)
    return EngagedQueriesConfig(**json.loads(raw)) if raw else EngagedQueriesConfig()


def refresh_engaged_queries(ws: Workspace, config: EngagedQueriesConfig | None = None) -> int:
    """Recompute every item's engaged-query tokens; returns the number of items that have some.
    Runs inside the caller's transaction when there is one."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    config = config or stored_config(ws)
    end = "CAST(? AS TIMESTAMP)" if config.as_of else "(SELECT max(timestamp) FROM engagement)"
    params = [config.as_of] if config.as_of else []
    with ws.registered("_stopwords", {"word": sorted(ENGLISH_STOP_WORDS)}):
        ws.run("DELETE FROM engaged_queries")
        ws.run(f"""
            INSERT INTO engaged_queries
            WITH bounds AS (SELECT {end} AS window_end),
            recent AS (
                SELECT e.query, e.item_id, sum(e.clicks + e.saves + e.long_clicks) AS engagement
                FROM engagement e, bounds b
                WHERE e.timestamp <= b.window_end AND e.timestamp > b.window_end - to_days(?)
                GROUP BY ALL HAVING sum(e.clicks + e.saves + e.long_clicks) > 0
            ),
            tokens AS (
                SELECT item_id, unnest(regexp_split_to_array(lower(query), '[^\\p{{L}}\\p{{N}}]+')) AS token,
                       engagement
                FROM recent
            ),
            scored AS (
                SELECT item_id, token, sum(engagement) AS score FROM tokens
                WHERE token <> '' AND token NOT IN (SELECT word FROM _stopwords)
                GROUP BY ALL
            ),
            ranked AS (
                SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY score DESC, token) AS rank FROM scored
            )
            SELECT item_id, string_agg(token, ' ' ORDER BY rank) FROM ranked WHERE rank <= ? GROUP BY item_id
            """, [*params, config.window_days, config.top_n])
    ws.set_meta(META_KEY, json.dumps(asdict(config)))
    return ws.count("engaged_queries")
