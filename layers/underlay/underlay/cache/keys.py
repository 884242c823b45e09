"""Cache key builders, declared once per data type.

    from underlay.cache import keys
    keys.MOVIE_DETAIL.build(id=42)            # CacheKey("movie:detail:42", data_type="detail")
    SESSION = keys.define("session", "session:{sid}", "session")   # an app's own

A key's data type picks its TTL from `cache.ttl_seconds` and groups its hit/miss statistics. Every parameter is
percent-escaped, so user input (a search query, say) can never add a `:` segment or a glob character that a
pattern invalidation would then match.
"""

from __future__ import annotations

import re
import string
from typing import NamedTuple
from urllib.parse import quote

_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")
_DATA_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OTHER = "other"  # the data type of a plain string key


class CacheKey(NamedTuple):
    """A logical key (without the namespace prefix) and its data type."""

    key: str
    data_type: str = OTHER


def escape(value: object) -> str:
    """Percent-escape everything but unreserved characters: no `:`, `*`, `?`, `[`, `]` or spaces survive."""
    return quote(str(value), safe="")


class KeyBuilder(NamedTuple):
    name: str
    template: str  # e.g. "movie:detail:{id}"
    data_type: str

    def build(self, **params: object) -> CacheKey:
        return CacheKey(self.template.format(**{k: escape(v) for k, v in params.items()}), self.data_type)

    @property
    def pattern(self) -> str:
        """The glob matching every key of this builder (for pattern invalidation): `movie:detail:*`."""
        return re.sub(r"\{[a-z_][a-z0-9_]*\}", "*", self.template)


BUILDERS: dict[str, KeyBuilder] = {}


def define(name: str, template: str, data_type: str) -> KeyBuilder:
    """Declare a key builder. Names are unique; fields must be simple names; the data type is a short slug."""
    if not _DATA_TYPE.match(data_type):
        raise ValueError(f"data type {data_type!r} must be a short lowercase slug")
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    bad = [f for f in fields if not _FIELD.match(f)]
    if bad or not template or any(c in template for c in "*?[]"):
        raise ValueError(f"key template {template!r} must use plain {{name}} fields and no glob characters")
    existing = BUILDERS.get(name)
    builder = KeyBuilder(name, template, data_type)
    if existing is not None and existing != builder:
        raise ValueError(f"cache key builder {name!r} is declared twice")
    BUILDERS[name] = builder
    return builder


# The built-in examples from the cache contract; apps add their own with `define`.
MOVIE_DETAIL = define("movie_detail", "movie:detail:{id}", "detail")
MOVIES_LIST = define("movies_list", "movies:list:{hash}", "list")
RANKINGS = define("rankings", "rankings:{type}:score", "rankings")
AUTOCOMPLETE = define("autocomplete", "search:autocomplete:{q}", "autocomplete")
HOME_BANNERS = define("home_banners", "home:banners", "banners")
