"""The satisfaction survey's page: plain HTML, no JavaScript, readable on a phone.

``GET /survey/<token>?rating=N`` records the rating the customer clicked (in the mail, the
Telegram button or the web chat) and shows it with a comment field; ``POST`` sends the form
(a rating, a comment, "do not ask me again"). A HEAD request (link checkers, previews) records
nothing. Texts are German or English, as the conversation was.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from bot.survey import MAX_COMMENT, RATINGS, PageState, SurveyRefused, Surveys, stars, texts_for

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:1rem;
color:#1d1c1d;background:#f8f8f8}
main{max-width:32rem;margin:0 auto;background:#fff;border-radius:12px;padding:1.25rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin:0 0 1rem}
.ratings{display:flex;flex-wrap:wrap;gap:.5rem;margin:0 0 1rem;padding:0;border:0}
.ratings label{flex:1 1 4.5rem;text-align:center;border:1px solid #ccc;border-radius:8px;
padding:.6rem .2rem;font-size:1.1rem;cursor:pointer}
.ratings input{display:block;margin:.3rem auto 0}
textarea{width:100%;box-sizing:border-box;min-height:7rem;font:inherit;padding:.5rem}
button{font:inherit;font-size:1.1rem;padding:.7rem 1.4rem;margin-top:1rem;border:0;
border-radius:8px;background:#1264a3;color:#fff}
.note{color:#616061}
"""


class SurveyPage:
    """The survey page's routes, over ``Surveys``."""

    def __init__(self, surveys: Surveys) -> None:
        self.surveys = surveys

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/survey/{token}", self.show, allow_head=False),
            web.head("/survey/{token}", self.head),
            web.post("/survey/{token}", self.send),
        ]

    async def head(self, request: web.Request) -> web.Response:
        return web.Response(content_type="text/html")

    async def show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        rating = _rating(request.query.get("rating", ""))
        try:
            if rating is None:
                state = await self.surveys.page(token)
            else:
                state = await self.surveys.answer(token, rating)
        except SurveyRefused as exc:
            log.info("survey link refused", extra={"reason": str(exc)})
            return _expired(request)
        return _page(state, notice="thanks" if state.rating is not None else "")

    async def send(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        form = await request.post()
        rating = _rating(str(form.get("rating", "")))
        comment = str(form.get("comment", ""))[:MAX_COMMENT]
        opt_out = form.get("opt_out") == "yes"
        try:
            state = await self.surveys.answer(token, rating, comment, opt_out=opt_out)
        except SurveyRefused as exc:
            log.info("survey form refused", extra={"reason": str(exc)})
            return _expired(request)
        return _page(state, notice="opted_out" if opt_out else "sent")


def _rating(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) in RATINGS else None


def _expired(request: web.Request) -> web.Response:
    language = "de" if request.headers.get("Accept-Language", "").startswith("de") else "en"
    t = texts_for(language)
    body = f"<h1>{html.escape(t['title'])}</h1><p>{html.escape(t['expired'])}</p>"
    return _html(language, t["title"], body, status=410)


def _page(state: PageState, *, notice: str) -> web.Response:
    t = texts_for(state.language)
    language = "de" if state.language.lower().startswith("de") else "en"
    parts = [f"<h1>{html.escape(t['title'])}</h1>"]
    if notice in ("sent", "opted_out"):
        parts.append(f'<p id="notice"><strong>{html.escape(t[notice])}</strong></p>')
    if state.rating is not None:
        if notice == "thanks":
            parts.append(f'<p id="notice"><strong>{html.escape(t["thanks"])}</strong></p>')
        rated = t["rated"].format(stars=stars(state.rating), rating=state.rating)
        parts.append(f'<p id="rated">{html.escape(rated)}</p>')
    labels = t["labels"].split("|")
    choices = "".join(
        f'<label>{stars(r)}<br><span class="note">{html.escape(labels[r - 1])}</span>'
        f'<input type="radio" name="rating" value="{r}"'
        f"{' checked' if r == state.rating else ''}></label>"
        for r in RATINGS
    )
    legend = t["change"] if state.rating is not None else t["scale"]
    opt_out = (
        ""
        if state.opted_out
        else f'<p><label><input type="checkbox" name="opt_out" value="yes"> '
        f"{html.escape(t['opt_out'])}</label></p>"
    )
    parts.append(
        '<form method="post">'
        f'<fieldset class="ratings"><legend>{html.escape(legend)}</legend>{choices}</fieldset>'
        f'<label for="comment">{html.escape(t["comment"])}</label>'
        f'<textarea id="comment" name="comment" maxlength="{MAX_COMMENT}">'
        f"{html.escape(state.comment)}</textarea>"
        f"{opt_out}"
        f'<button type="submit">{html.escape(t["send"])}</button>'
        "</form>"
    )
    return _html(language, t["title"], "".join(parts))


def _html(language: str, title: str, body: str, *, status: int = 200) -> web.Response:
    page = (
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'",
            "Referrer-Policy": "no-referrer",
        },
    )
