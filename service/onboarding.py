"""What onboarding a municipality takes, checked the same way by the admin endpoint and the CLI.

The Amtlicher Gemeindeschlüssel (AGS) says where a unit lies: its first two digits are the Land's key. A
municipality's has 8 digits (Halle 15002000), a district's 5 (Saalekreis 15088). So the state may be left
out (it follows from the AGS) and, when given, must be the AGS's; and the CRS data arrives in defaults to
the Land's official one (shared/DOMAIN.md): ETRS89 / UTM 33N in the eastern Länder, 32N elsewhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.loader import NUL
from service.models import AGS_PATTERN, SLUG_PATTERN


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul", NUL)
    return value


# Text PostgreSQL can store: anything but NUL (which no text column holds).
Text = Annotated[str, AfterValidator(_no_nul)]

# Länderschlüssel -> (name, abbreviation, official CRS)
LAENDER: dict[str, tuple[str, str, int]] = {
    "01": ("Schleswig-Holstein", "SH", 25832), "02": ("Hamburg", "HH", 25832),
    "03": ("Niedersachsen", "NI", 25832), "04": ("Bremen", "HB", 25832),
    "05": ("Nordrhein-Westfalen", "NW", 25832), "06": ("Hessen", "HE", 25832),
    "07": ("Rheinland-Pfalz", "RP", 25832), "08": ("Baden-Württemberg", "BW", 25832),
    "09": ("Bayern", "BY", 25832), "10": ("Saarland", "SL", 25832), "11": ("Berlin", "BE", 25833),
    "12": ("Brandenburg", "BB", 25833), "13": ("Mecklenburg-Vorpommern", "MV", 25833),
    "14": ("Sachsen", "SN", 25833), "15": ("Sachsen-Anhalt", "ST", 25832), "16": ("Thüringen", "TH", 25832),
}
_EPSG = re.compile(r"^(?:EPSG:{1,2}|https?://www\.opengis\.net/def/crs/EPSG/0/)?([0-9]+)$", re.IGNORECASE)


def _slug(value: str) -> str:
    if not re.fullmatch(SLUG_PATTERN, value):
        raise PydanticCustomError("slug", "a slug is lower-case letters (a-z), digits and hyphens, at most 63, "
                                          "beginning with a letter or digit (e.g. saalekreis), not '{value}'",
                                  {"value": value[:80]})
    return value


# What names a municipality or a collection in URLs.
Slug = Annotated[str, AfterValidator(_slug), WithJsonSchema({"type": "string", "pattern": SLUG_PATTERN})]


def _epsg(value: Any) -> Any:
    """25832 as a number, as text, as EPSG:25832 or as its OGC URI."""
    if isinstance(value, str) and (match := _EPSG.match(value.strip())):
        return int(match[1])
    return value


class NewMunicipality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: Slug = Field(examples=["saalekreis"])
    name: Text = Field(min_length=1, max_length=200)
    ags: str = Field(json_schema_extra={"pattern": AGS_PATTERN}, examples=["15088"],
                     description="Amtlicher Gemeindeschlüssel: 8 digits for a municipality, 5 for a district")
    state: Text | None = Field(default=None, max_length=100, validate_default=True, examples=["Sachsen-Anhalt"],
                               description="the Land (name or abbreviation); by default the AGS's")
    crs: Annotated[Literal[25832, 25833] | None, BeforeValidator(_epsg)] = Field(
        default=None, validate_default=True,
        description="official CRS its data arrives in (an EPSG code); by default the Land's")

    @field_validator("ags")
    @classmethod
    def _land_exists(cls, ags: str) -> str:
        if not re.fullmatch(AGS_PATTERN, ags):
            raise PydanticCustomError("ags", "an AGS has 8 digits (a municipality's, e.g. 15002000) or 5 (a "
                                             "district's, e.g. 15088), not '{ags}'", {"ags": ags})
        if ags[:2] not in LAENDER:
            raise PydanticCustomError("ags", "an AGS begins with its Land's key, 01 to 16, not {land}",
                                      {"land": ags[:2]})
        return ags

    @field_validator("state")
    @classmethod
    def _state_of_ags(cls, state: str | None, info: ValidationInfo) -> str | None:
        ags = info.data.get("ags")
        if ags is None:  # refused already
            return state
        name, short, _ = LAENDER[ags[:2]]
        if state is not None and state.strip().casefold() not in (name.casefold(), short.casefold()):
            raise PydanticCustomError("state", "AGS {ags} lies in {name} (its first two digits, {land}), not in "
                                      "'{state}'", {"ags": ags, "name": name, "land": ags[:2], "state": state})
        return name

    @field_validator("crs")
    @classmethod
    def _official(cls, crs: int | None, info: ValidationInfo) -> int | None:
        ags = info.data.get("ags")
        return crs if crs is not None or ags is None else LAENDER[ags[:2]][2]
