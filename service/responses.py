"""Representations: format negotiation, links, JSON/GeoJSON/HTML responses."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from service import i18n
from service.errors import InvalidParameter

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _shown(value: object) -> str:
    """A property's value in an HTML table: yes/no rather than Python's True/False, nothing for null, lists and
    objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return i18n.gettext_(i18n.YES if value else i18n.NO)
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, float):  # 38,5 on a German page; every digit kept, no grouping (codes, years)
        return format_decimal(value, locale=i18n.current(), decimal_quantization=False, group_separator=False)
    return str(value)


def _count(value: object) -> str:
    """A count as the page's language writes it: 200,000 or 200.000."""
    return format_decimal(value, locale=i18n.current()) if isinstance(value, int) else str(value)


def _hectares(value: object) -> str:
    """An area in hectares, two decimals: 3,870.25 or 3.870,25."""
    return format_decimal(value, format="#,##0.00", locale=i18n.current()) if isinstance(value, int | float) \
        else str(value)


def _zone(context: Context) -> tzinfo:
    """The service's clock (GEOTWIN_API__TIME_ZONE), which is how the API reads a time without a zone."""
    request = context.get("request")
    return request.app.state.settings.api.zone if request is not None else UTC


@pass_context
def _moment(context: Context, value: object) -> str:
    """A moment as the page's language writes it, on the service's clock: 01.11.2026, 00:00:00 MEZ."""
    if not isinstance(value, datetime):
        return str(value)
    zone, language = _zone(context), i18n.current()
    return f"{format_datetime(value, format='medium', tzinfo=zone, locale=language)} " \
           f"{format_datetime(value, format='z', tzinfo=zone, locale=language)}"


@pass_context
def _date_field(context: Context, value: datetime) -> str:
    """The date a moment falls on, on the service's clock, as a date field takes it: 2026-11-01."""
    return value.astimezone(_zone(context)).date().isoformat()


def _written(day: date) -> str:
    """A date as the page's language writes it: 30.09.2026, Sep 30, 2026."""
    return format_date(day, format="medium", locale=i18n.current())


def _calendar_day(value: object) -> str:
    """The day an extent's RFC 3339 bound names (`1994-02-01T00:00:00Z`), as the page's language writes a date;
    nothing for an open bound."""
    if not isinstance(value, str):
        return ""
    try:
        return _written(datetime.fromisoformat(value.replace("Z", "+00:00")).date())
    except ValueError:
        return value


def segment(value: object) -> str:
    """A feature id as one segment of a URL path: percent-encoded, `/` too (`Nr. 12/3`, `Fläche €`); the routes
    take a `/` inside an id. `:` stays, as in regional ids (`halle:gs-001`)."""
    return quote(str(value), safe=":@")


def _coded(value: object, field: dict[str, Any] | None) -> str:
    """A value as `_shown` gives it, a code with its label first (`Industriegebiet (GI)`), a date as the page's
    language writes it (`30.09.2026`, `Sep 30, 2026`)."""
    label = (field or {}).get("labels", {}).get(value) if isinstance(value, str) else None
    if label:
        return f"{label} ({value})"
    if (field or {}).get("format") == "date" and isinstance(value, str):
        try:
            return _written(date.fromisoformat(value))
        except ValueError:  # not a date after all (data written around the contract): as it is
            pass
    return _shown(value)


def _display_fields(layer_type: Any) -> dict[str, dict[str, Any]]:
    """The layer type's display fields with their titles and code labels in the page's language."""
    out = {}
    for name, field in layer_type.display_fields().items():
        out[name] = {**field, "title": i18n.gettext_(field["title"])}
        if "labels" in field:
            out[name]["labels"] = {code: i18n.gettext_(label) for code, label in field["labels"].items()}
    return out


def _titled(title: str) -> str:
    """A collection's title in the page's language: a regional one ("<layer type> – region") is made of parts
    the catalog translates; a municipality's own collection has its own words."""
    from service.catalog import REGION_SUFFIX

    if title.endswith(REGION_SUFFIX):
        return f"{i18n.gettext_(title.removesuffix(REGION_SUFFIX))} – {i18n.gettext_(i18n.REGION)}"
    return title


def _describe(item: Any) -> str:
    """A dataset's or collection's description in the page's language when the catalog wrote it (its values,
    a layer type's title among them, translated too); a municipality's own description as it is."""
    if item.description_text is None:
        return item.description
    message, values = item.description_text
    return i18n.gettext_(message) % {k: i18n.gettext_(v) for k, v in values.items()}


def _download_label(link_: dict[str, str]) -> str:
    """An export link's format, as a page names it: `GeoPackage`, `Excel (ein Punkt je Objekt als x/y)`."""
    from service.export import FORMATS

    titles = [f.title for f in FORMATS.values() if f.media_type == link_.get("type")]
    return i18n.gettext_(titles[0]) if titles else link_.get("title", "")


@functools.cache
def _script_words(language: str) -> dict[str, str]:
    """What the pages' scripts show in `language` (the one being rendered): yes/no, every layer type's title
    (the viewer's legend), property titles and code labels (its popups and legend, static/properties.js). The
    viewer takes them from the style, which is the same in every language. Once per language: the layer types
    are fixed at start."""
    from service.catalog import REGION_SUFFIX
    from service.layertypes import registry

    fields = [f for lt in registry().values() for f in lt.display_fields().values()]
    titles = {f["title"] for f in fields} | {label for f in fields for label in f.get("labels", {}).values()}
    titles |= {lt.title for lt in registry().values()}
    words = i18n.words([i18n.YES, i18n.NO, *sorted(titles)])
    return words | {lt.title + REGION_SUFFIX: _titled(lt.title + REGION_SUFFIX) for lt in registry().values()}


TEMPLATES.env.filters["shown"] = _shown
TEMPLATES.env.filters["coded"] = _coded
TEMPLATES.env.filters["segment"] = segment
TEMPLATES.env.filters["count"] = _count
TEMPLATES.env.filters["hectares"] = _hectares
TEMPLATES.env.filters["moment"] = _moment
TEMPLATES.env.filters["date_field"] = _date_field
TEMPLATES.env.filters["calendar_day"] = _calendar_day
TEMPLATES.env.filters["titled"] = _titled
TEMPLATES.env.add_extension("jinja2.ext.i18n")
TEMPLATES.env.install_gettext_callables(i18n.gettext_, i18n.ngettext_, newstyle=True)  # type: ignore[attr-defined]
TEMPLATES.env.globals["tr"] = i18n.gettext_  # data's own texts (titles): translated, never %-formatted
TEMPLATES.env.globals["display_fields"] = _display_fields
TEMPLATES.env.globals["download_label"] = _download_label
TEMPLATES.env.globals["describe"] = _describe
GEOJSON = "application/geo+json"
JSON = "application/json"
HTML = "text/html"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
SCHEMA = "application/schema+json"


def negotiate(request: Request) -> str:
    """`json` or `html`: the `f` parameter wins, then the Accept header (browsers get HTML)."""
    f = request.query_params.get("f")
    if f is not None:
        if f in ("json", "geojson"):
            return "json"
        if f == "html":
            return "html"
        raise InvalidParameter(f"f must be json, geojson or html; got {f!r}", parameter="f")
    accept = request.headers.get("accept", "")
    best_html = quality(accept, ("text/html",))
    best_json = quality(accept, ("application/json", "application/geo+json", "application/*"))
    return "html" if best_html > best_json else "json"


def quality(accept: str, types: tuple[str, ...]) -> float:
    best = 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0] in types:
            q = 1.0
            for fld in fields[1:]:
                if fld.startswith("q="):
                    try:
                        q = float(fld[2:])
                    except ValueError:
                        q = 0.0
            best = max(best, q)
    return best


def base_url(request: Request) -> str:
    public = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    return out


def self_links(url: str, fmt: str, json_type: str = JSON, title: str = "this document") -> list[dict[str, str]]:
    """`self` for the representation served and `alternate` for the other one."""
    json_link = link(f"{url}?f=json", "self" if fmt == "json" else "alternate", json_type, f"{title} as JSON")
    html_link = link(f"{url}?f=html", "self" if fmt == "html" else "alternate", HTML, f"{title} as HTML")
    return [json_link, html_link]


DATA_CACHE = "public, no-cache"  # keep, but revalidate every time: the ETag makes revalidation cheap


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names this ETag (weak or strong form, a list, or *)."""
    return if_none_match.strip() == "*" or etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}


def not_modified(request: Request, etag: str) -> Response | None:
    """304 when the client's copy (If-None-Match) is the current one."""
    if etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": DATA_CACHE,
                                                  "Vary": "Accept, Accept-Language"})
    return None


def with_etag(response: Response, etag: str) -> Response:
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = DATA_CACHE
    response.headers.setdefault("Vary", "Accept")  # JSON or HTML by Accept; HTML pages add Accept-Language
    return response


def json_response(body: Any, media_type: str = JSON, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


def html_response(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A page from a template, with security headers: a Content-Security-Policy that runs only the page's own
    scripts (inline ones carry this answer's nonce), no MIME sniffing, no referrer beyond the origin."""
    settings = request.app.state.settings
    nonce = secrets.token_urlsafe(16)
    language = page_language(request)
    token = i18n.use(language)
    try:  # the template is rendered here, in the page's language
        response = TEMPLATES.TemplateResponse(
            request, template,
            {"base": base_url(request), "api_title": settings.api.title,
             "basemap": settings.api.basemap_style_url, "maplibre": request.app.state.maplibre_available,
             "csp_nonce": nonce, "language": language, "page_words": _script_words(language), **context},
        )
    finally:
        i18n.reset(token)
    response.headers.update(security_headers(nonce, settings.api.basemap_style_url, settings.api.basemap_origins))
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept, Accept-Language"
    return response


def page_language(request: Request) -> str:
    return i18n.negotiate_language(request.headers.get("accept-language", ""))


def variant(request: Request, fmt: str) -> str:
    """What a negotiated representation depends on, for its ETag: the format, and for HTML the language."""
    return f"html-{page_language(request)}" if fmt == "html" else fmt


def security_headers(nonce: str, basemap: str = "", origins: Sequence[str] = ()) -> dict[str, str]:
    # Maps load basemap styles and tiles from other origins (https:, and the configured basemap's origin and
    # further origins, which may be plain http: on a municipal intranet) and run MapLibre's workers from blob:
    # URLs. Pages may be embedded (municipal portals frame the viewer), so frame-ancestors stays open.
    parts = urlsplit(basemap)
    plain = [f"{parts.scheme}://{parts.netloc}"] if parts.scheme == "http" and parts.netloc else []
    plain += [o for o in origins if o.startswith("http:") and o not in plain]
    extra = "".join(f" {o}" for o in plain)
    csp = ("default-src 'self'; "
           f"script-src 'self' 'nonce-{nonce}'; "
           "style-src 'self' 'unsafe-inline'; "
           f"img-src 'self' data: blob: https:{extra}; font-src 'self' data: https:{extra}; "
           f"connect-src 'self' https:{extra}; worker-src 'self' blob:; child-src blob:; "
           "object-src 'none'; base-uri 'self'; form-action 'self'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin"}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def microseconds(moment: datetime) -> int:
    """A moment as whole microseconds since 1970 (exact: no float on the way), as PostgreSQL keeps it."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def feature_etag(change_id: int, made: datetime, variant: str = "") -> str:
    """A feature's ETag: its change id and when that change was made, plus a tag for other representations.
    If-Match compares the first two. The id alone is not enough: a database restored from an older backup
    hands out the ids the backup lacks again, to other versions, and a client (or a cache in front) holding
    such an id would match a version it never saw."""
    tag = f"{change_id}.{microseconds(made):x}"
    if not variant:
        return f'"{tag}"'
    return f'"{tag}-{hashlib.blake2b(variant.encode(), digest_size=6).hexdigest()}"'


def representation(variant: str, params: list[tuple[str, str]]) -> str:
    """What tags a feature's ETag per representation (`feature_etag`'s `variant`): nothing for plain GeoJSON,
    else the format (service.responses.variant) and the query parameters, sorted."""
    return "" if variant == "json" and not params else f"{variant}|{sorted(params)}"


def if_match_change(header: str | None) -> tuple[int, int | None] | None:
    """The version an If-Match names (any representation's ETag of it): its change id and when it was made, in
    microseconds (None in an ETag from before they held it); change id -1 for `*`, 0 for what never matches."""
    if header is None:
        return None
    value = header.strip()
    if value == "*":
        return -1, None
    first = value.split(",")[0].strip()
    if first.startswith("W/"):
        return 0, None  # weak tags never match for If-Match (RFC 9110 §13.1.1)
    head, dot, made = first.strip('"').split("-")[0].partition(".")
    if not (head.isdigit() and len(head) < 19):
        return 0, None
    if not dot:
        return int(head), None
    try:
        return (int(head), int(made, 16)) if len(made) < 16 else (0, None)  # a bigint, for the database
    except ValueError:
        return 0, None
