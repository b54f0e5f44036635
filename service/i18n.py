"""The HTML pages in German or English, as the browser asks (`Accept-Language`); the API's JSON stays the same
in every language, as clients and the contract in `schemas/` expect.

The texts are gettext catalogs, `service/locale/<language>/LC_MESSAGES/messages.po`, kept with Babel's tools
(README, "Translations"): the templates mark their texts with `_()` or `{% trans %}`, and the layer types' titles
are translated by the same catalog, so `schemas/` stays one contract in one language. English is the source
language: its texts are the msgids themselves, except the layer types' code labels that are German only
("Gewerbegebiet"), which the English catalog glosses ("Gewerbegebiet (commercial area)"), as the schemas do
for the others ("verfügbar (available)"). Catalogs are read and compiled in memory when first used.
"""

from __future__ import annotations

import gettext
import json
from contextvars import ContextVar, Token
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE = Path(__file__).parent / "locale"
LANGUAGES = ("en", "de")
DEFAULT = "en"  # when the browser names neither: the language the API documents are written in
_language: ContextVar[str] = ContextVar("geotwin_page_language", default=DEFAULT)


@cache
def translations(language: str) -> gettext.NullTranslations:
    path = LOCALE / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate_language(accept_language: str) -> str:
    """The best of LANGUAGES for an Accept-Language header (RFC 9110 §12.5.4): the highest weight wins, the
    header's order breaks ties; a region (`de-AT`) counts for its language; DEFAULT when none is named."""
    best, best_q = DEFAULT, 0.0
    for part in accept_language.split(","):
        tag, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        language = tag.split("-")[0].lower()
        if language in LANGUAGES and q > best_q:
            best, best_q = language, q
    return best


def current() -> str:
    return _language.get()


def use(language: str) -> Token[str]:
    """Render in `language` until `reset(token)`."""
    return _language.set(language)


def reset(token: Token[str]) -> None:
    _language.reset(token)


def gettext_(message: str) -> str:
    return translations(_language.get()).gettext(message)


def ngettext_(singular: str, plural: str, n: int) -> str:
    return translations(_language.get()).ngettext(singular, plural, n)


def N_(message: str) -> str:  # noqa: N802 - the name gettext's tools look for
    """Marks a text for the catalog where it is defined; it is translated where a page shows it."""
    return message


YES, NO, REGION = N_("yes"), N_("no"), N_("region")


def extract_schema_titles(fileobj, keywords, comment_tags, options):  # noqa: ANN001, ANN201, ARG001
    """A Babel extractor (babel.cfg): a layer type's title, its properties' titles and their codes' labels
    (`x-labels`), which the pages show. The labels are partly German, partly English, partly both
    ("vermarktet (sold or let)"); a German page shows them in German."""
    schema = json.load(fileobj)
    name = Path(getattr(fileobj, "name", "schemas")).name
    properties = schema.get("properties", {}).values()
    for title in [schema.get("title"), *(p.get("title") for p in properties)]:
        if title:
            yield 0, None, title, [f"a title in schemas/{name}"]
    for spec in properties:
        for code, label in (spec.get("x-labels") or {}).items():
            yield 0, None, label, [f"the label of the code {code} in schemas/{name}"]


def words(messages: list[str]) -> dict[str, str]:
    """Texts a page's scripts show (popups, the viewer's panel), translated, for the page to embed."""
    return {m: gettext_(m) for m in messages}
