"""Settings, grouped by concern. Nothing is read at import time: call `Settings()` where it is needed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.crs import DEFAULT_CRS, resolve


class DatabaseSettings(BaseSettings):
    """Connection settings under libpq's own names, so psql, Alembic and the service share one `.env`."""

    model_config = SettingsConfigDict(env_prefix="PG", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "geotwin"
    password: str = ""
    database: str = "geotwin"
    pool_min: int = Field(default=1, alias="GEOTWIN_DB_POOL_MIN")
    pool_max: int = Field(default=10, alias="GEOTWIN_DB_POOL_MAX")
    # Longest a request's statement may run (s); jobs (imports, asynchronous process runs) get job_timeout_s.
    statement_timeout_s: float = Field(default=30, alias="GEOTWIN_DB_STATEMENT_TIMEOUT_S")
    job_timeout_s: float = Field(default=3600, alias="GEOTWIN_DB_JOB_TIMEOUT_S")
    # Longest a request waits for a lock, e.g. an edit while an import writes the collection, before it is
    # answered 409 with Retry-After (s). Jobs wait for their turn without a limit.
    lock_timeout_s: float = Field(default=10, alias="GEOTWIN_DB_LOCK_TIMEOUT_S")
    # Longest a request waits for a free connection before it is answered 503 (s).
    acquire_timeout_s: float = Field(default=5, alias="GEOTWIN_DB_ACQUIRE_TIMEOUT_S")
    # Read replicas (PostgreSQL streaming replicas of this database), as a JSON list of libpq URLs.
    replicas: list[str] = Field(default_factory=list, alias="GEOTWIN_DB_REPLICAS")

    def dsn(self) -> str:
        """A libpq URL (asyncpg, Alembic and psql read it). `PGHOST` may be a Unix-socket directory, as libpq
        allows (`/var/run/postgresql`); user and password are percent-encoded, so any character works."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        database = quote(self.database, safe="")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{database}?host={quote(self.host)}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"


def _csp_origin(parts: SplitResult) -> bool:
    """An http(s) URL whose origin may go into the pages' Content-Security-Policy as it is."""
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c in parts.netloc for c in " ;,'\"")


class ApiSettings(BaseModel):
    """How collections are paged and presented."""

    default_limit: int = 100
    max_limit: int = 10_000
    title: str = "GeoTwin"
    # A MapLibre style URL for the basemap under the viewer and the HTML maps, e.g. basemap.de's
    # https://sgx.geodatenzentrum.de/gdz_basemapde_vektor/styles/bm_web_col.json; empty = plain background
    # (works offline). Its server must allow other origins to read it (CORS), as public basemaps do.
    basemap_style_url: str = ""
    # Further plain-http origins the basemap style loads tiles, sprites or fonts from (an intranet tile server
    # beside the style's own), e.g. `GEOTWIN_API__BASEMAP_ORIGINS='["http://kacheln.intranet:8080"]'`. The
    # pages' Content-Security-Policy admits https: and the style's own origin without this.
    basemap_origins: list[str] = Field(default_factory=list)
    # CRSs offered for output (`crs`), `bbox-crs` and `filter-crs`, besides CRS84 and the storage CRS
    # (EPSG:25832), which are always offered. Any EPSG code: `GEOTWIN_API__CRS='["EPSG:25833","EPSG:31468"]'`.
    crs: list[str] = Field(default_factory=lambda: list(DEFAULT_CRS))
    # Largest request body accepted by writes (413 above it).
    max_body_mb: int = 64
    # A client that sends nothing of its body for this long is answered 408 (slow or stalled uploads).
    body_timeout_s: float = 30
    # Replacing, changing or deleting a feature: `required` answers 428 without If-Match, so nobody's change is
    # overwritten unseen. `optional` also takes such writes from clients that send none (QGIS's OGC API -
    # Features editing, from QGIS 3.32): without the header the last writer wins; a stale one is still 412.
    if_match: Literal["required", "optional"] = "required"
    # The municipality's clock (an IANA name): a date or time given without a zone (`asOf=2026-11-01`,
    # `geotwin history prune --before`) is read in it, a moment compared with a validity date falls on its
    # day there, and the HTML pages show moments in it. JSON always gives UTC.
    time_zone: str = "Europe/Berlin"

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not an IANA time zone like Europe/Berlin or UTC: {name!r}") from None
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @field_validator("basemap_style_url")
    @classmethod
    def _basemap_url(cls, url: str) -> str:
        if url and not _csp_origin(urlsplit(url)):
            raise ValueError(f"not an http(s) URL of a MapLibre style: {url!r}")
        return url

    @field_validator("basemap_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if not _csp_origin(parts) or parts.path.strip("/") or parts.query:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, names: list[str]) -> list[str]:
        for name in names:
            resolve(name)  # ValueError names the CRS that pyproj does not know
        return names

    @model_validator(mode="after")
    def _limits(self) -> ApiSettings:
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("api.default_limit must be between 1 and api.max_limit")
        return self


class CacheSettings(BaseModel):
    """In-process caches; entries are keyed by collection versions, so their size only bounds memory."""

    tile_cache_mb: int = 256
    count_cache_entries: int = 10_000


class ImportSettings(BaseModel):
    """File imports: the largest upload (and the most a zip may expand to)."""

    max_upload_mb: int = 512


class JobSettings(BaseModel):
    """Import jobs and asynchronous process runs (`Prefer: respond-async`): how many run at once per worker
    (the rest wait, queued; each running job needs up to three of the job pool's ten connections) and how
    long process results are kept."""

    concurrency: int = Field(default=3, ge=1, le=3)
    keep_days: int = 7


class LimitSettings(BaseModel):
    """Rate limits per key (or token subject) and per client address, counted in `storage`, as
    "<count>/<second|minute|hour>"; empty = no limit. Behind a proxy, let uvicorn read the client's address
    from X-Forwarded-For by setting FORWARDED_ALLOW_IPS to the proxy's address."""

    writes: str = "600/minute"  # POST/PUT/PATCH/DELETE on data, keys, collections
    expensive: str = "120/minute"  # process runs, exports, imports
    # Where the counts live: memory:// (each worker process its own, so N workers allow N times the limit) or
    # a Redis all workers and replicas share: redis://host:6379/0, rediss://… (TLS), redis+sentinel://….
    storage: str = "memory://"

    @field_validator("storage")
    @classmethod
    def _storage(cls, uri: str) -> str:
        scheme = urlsplit(uri).scheme
        if scheme not in ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster"):
            raise ValueError(f"memory:// or a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL, "
                             f"not {uri!r}")
        return uri


class AuthSettings(BaseModel):
    """OpenID Connect (optional): bearer tokens from one issuer, claims mapped to municipality and role.
    API keys need no settings."""

    oidc_issuer: str = ""  # e.g. https://keycloak.example.de/realms/geotwin; empty = tokens not accepted
    oidc_audience: str = ""  # checked when set
    oidc_jwks_url: str = ""  # the issuer's signing keys (…/protocol/openid-connect/certs for Keycloak)
    oidc_jwks: str = ""  # or the JWKS itself, as JSON (machines that cannot reach the issuer)
    municipality_claim: str = "municipality"  # a municipality slug
    role_claim: str = "geotwin_role"  # viewer, editor, admin (or platform), a string or a list


class Settings(BaseSettings):
    """All service settings; `GEOTWIN_API__DEFAULT_LIMIT=50` sets a nested value."""

    model_config = SettingsConfigDict(
        env_prefix="GEOTWIN_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    imports: ImportSettings = ImportSettings()
    jobs: JobSettings = JobSettings()
    limits: LimitSettings = LimitSettings()
    cache: CacheSettings = CacheSettings()
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    # Public base URL when behind a proxy (used in links); empty = derive from the request.
    public_url: str = ""


# ---------------------------------------------------------------- what an admin mistypes

def setting_names() -> list[str]:
    """Every environment variable (or `.env` line) a setting is read from."""
    names = [f.alias or f"PG{name.upper()}" for name, f in DatabaseSettings.model_fields.items()]
    for name, f in Settings.model_fields.items():
        if name == "db":
            continue
        group = f.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names += [f"GEOTWIN_{name.upper()}__{sub.upper()}" for sub in group.model_fields]
        else:
            names.append(f"GEOTWIN_{name.upper()}")
    return names


# Read by docker-compose.yml (ports, workers, Varnish's memory), not by the service; they reach it through
# the compose file's `env_file: .env`.
COMPOSE_VARIABLES = ("GEOTWIN_PORT", "GEOTWIN_WORKERS", "GEOTWIN_CACHE_PORT", "GEOTWIN_CACHE_SIZE")


def unknown_settings(environ: Mapping[str, str], env_file: Path = Path(".env"),
                     also: Iterable[str] = ()) -> list[str]:
    """A warning for each `GEOTWIN_` variable, in the environment or `.env`, that no setting reads (nor one of
    the command-line options, `also`): a typo would otherwise leave the default in force without a word."""
    known = {n.upper() for n in [*setting_names(), *also] if n.upper().startswith("GEOTWIN_")}
    groups = {n.split("__")[0] for n in known if "__" in n}  # a whole group as JSON: GEOTWIN_API='{…}'
    given = [n for n in environ if n.upper().startswith("GEOTWIN_")]
    if env_file.is_file():
        given += [n for n in dotenv_values(env_file) if n.upper().startswith("GEOTWIN_") and n not in given]
    warnings = []
    for name in given:
        if name.upper() in known or name.upper() in groups or name.upper() in COMPOSE_VARIABLES:
            continue
        close = difflib.get_close_matches(name.upper().removeprefix("GEOTWIN_"),
                                          sorted(k.removeprefix("GEOTWIN_") for k in known), n=1, cutoff=0.75)
        warnings.append(f"{name} is not a setting and is ignored" + (
            f"; did you mean GEOTWIN_{close[0]}?" if close else " (.env.example lists them all)"))
    return warnings


def settings_problems(exc: ValidationError) -> list[str] | None:
    """One line per wrong setting, naming the variable and the value; None for other validation errors."""
    if exc.title not in (Settings.__name__, DatabaseSettings.__name__):
        return None
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if exc.title == DatabaseSettings.__name__:
            name = loc[0] if loc[0].upper().startswith("GEOTWIN_") else f"PG{loc[0].upper()}"
        else:
            name = "GEOTWIN_" + "__".join(loc[:2]).upper()
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        lines.append(f"{name}{shown}: {error['msg']}")
    return lines
