"""What the annotation app renders: its pages (Jinja2, every value escaped unless marked safe), the
card of a pair, and the state the page's script reads (the cards an annotator holds, their progress)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import HTMLResponse

from relkit.annotation.campaign import Pair

if TYPE_CHECKING:
    from jinja2 import Environment

    from relkit.annotation.auth import Session
    from relkit.annotation.state import Annotation

HERE = Path(__file__).parent


def environment() -> Environment:
    """The app's templates, every value escaped unless marked safe."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


def guidelines_html(text: str | None) -> str:
    from markdown_it import MarkdownIt

    # html off: markup typed into the guidelines is shown as text, never run
    return MarkdownIt("commonmark", {"html": False}).render(text or "")


def page(annotation: Annotation, name: str, **context) -> HTMLResponse:
    return HTMLResponse(annotation.templates.get_template(name).render(**context))


def held(annotation: Annotation, request: Request, session: Session,
         first: tuple[str, str] | None = None) -> dict:
    """What the page's script reads: the cards the annotator holds (on screen, then next; `first`
    on screen), and their judgments against the goal."""
    campaign = annotation.campaign
    cards = [card(annotation, request, p) for p in campaign.hand_out(session.annotator, first)]
    return {"cards": cards, "done": campaign.progress(session.annotator), "goal": annotation.config.goal}


def card(annotation: Annotation, request: Request, pair: Pair) -> dict:
    image = pair.item.get("image")
    if image and not image.startswith(("http://", "https://")):
        image = str(request.url_for("image", item_id=pair.item_id).path)
    html = annotation.templates.get_template("_card.html").render(pair=pair, image=image, fields=other_fields(pair))
    return {"query_id": pair.query_id, "item_id": pair.item_id, "html": html, "image": image}


def other_fields(pair: Pair) -> list[tuple[str, str]]:
    """The item's text fields beyond title, description and image, as (name, text)."""
    item, out = pair.item, []
    for name in ("caption", "board_titles", "link_title", "link_description", "engaged_queries", "language"):
        value = item.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value:
            out.append((name.replace("_", " "), str(value)))
    for name, value in (item.get("extra") or {}).items():
        if value not in (None, ""):
            out.append((str(name), value if isinstance(value, str) else str(value)))
    return out
