"""Countries by name, stored as ISO 3166-1 alpha-2 codes: pycountry's maintained list, read once."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import pycountry

# Names staff files and people use that are not ISO's own short or common name.
ALIASES = {
    "uk": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "northern ireland": "GB", "usa": "US", "us": "US", "america": "US", "united states": "US",
    "deutschland": "DE", "españa": "ES", "espana": "ES", "italia": "IT", "holland": "NL", "nederland": "NL",
    "belgique": "BE", "belgië": "BE", "schweiz": "CH", "suisse": "CH", "österreich": "AT", "sverige": "SE",
    "danmark": "DK", "norge": "NO", "suomi": "FI", "polska": "PL", "ελλάδα": "GR", "türkiye": "TR", "turkey": "TR",
    "russia": "RU", "south korea": "KR", "north korea": "KP", "iran": "IR", "syria": "SY", "vietnam": "VN",
    "czech republic": "CZ", "ivory coast": "CI", "palestine": "PS", "moldova": "MD", "bolivia": "BO",
    "venezuela": "VE", "tanzania": "TZ", "laos": "LA", "brunei": "BN", "macedonia": "MK",
}


def _name(country) -> str:
    return getattr(country, "common_name", None) or country.name


def _sort_key(name: str) -> str:
    """Sort "Åland Islands" with the A's and "Côte d'Ivoire" with the C's."""
    plain = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in plain if not unicodedata.combining(ch)).casefold()


@lru_cache(maxsize=1)
def countries() -> tuple[tuple[str, str], ...]:
    """(code, name) for every country, by name: the choices of a country select."""
    return tuple(sorted(((c.alpha_2, _name(c)) for c in pycountry.countries), key=lambda pair: _sort_key(pair[1])))


@lru_cache(maxsize=1)
def _by_name() -> dict[str, str]:
    names = {}
    for country in pycountry.countries:
        for attr in ("name", "common_name", "official_name", "alpha_3"):
            value = getattr(country, attr, None)
            if value:
                names[value.casefold()] = country.alpha_2
    names.update(ALIASES)
    return names


def is_country_code(value: str) -> bool:
    """Whether `value` is an ISO 3166-1 alpha-2 code (upper case), e.g. GB."""
    return value in _codes()


@lru_cache(maxsize=1)
def _codes() -> frozenset[str]:
    return frozenset(code for code, _ in countries())


def country_name(code: str) -> str:
    """The country's name for a stored code; the code itself when it is not one we know."""
    return dict(countries()).get(code, code)


def country_code(text: str) -> str | None:
    """The code for a code, a name or a common alias ("gb", "United Kingdom", "UK", "Deutschland"), or None."""
    text = " ".join(text.split())
    if text.upper() in _codes():
        return text.upper()
    return _by_name().get(text.casefold())
