"""Self-hosting files, checked statically (no Docker engine here): they parse and reference what exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from typer.main import get_command

from service.cli import app as cli_app
from service.cli import option_variables
from service.settings import (
    COMPOSE_VARIABLES,
    DatabaseSettings,
    LimitSettings,
    Settings,
    setting_names,
    unknown_settings,
)

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def cli_commands() -> set[str]:
    return set(get_command(cli_app).commands)


def test_compose_has_postgis_with_a_volume_and_the_service():
    doc = compose()
    db, app = doc["services"]["db"], doc["services"]["app"]
    assert db["image"].startswith("postgis/postgis:")
    volume = db["volumes"][0].split(":")[0]
    assert volume in doc["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert (ROOT / app["build"] / "Dockerfile").exists()


def test_compose_service_migrates_then_serves_with_real_cli_commands():
    command = " ".join(compose()["services"]["app"]["command"])
    steps = re.findall(r"geotwin (\w[\w-]*)", command)
    assert steps[:2] == ["migrate", "serve"]
    assert set(steps) <= cli_commands()


def test_compose_environment_is_what_the_settings_read():
    env = compose()["services"]["app"]["environment"]
    fields = {f"PG{name.upper()}" for name in DatabaseSettings.model_fields if name in
              ("host", "port", "user", "password", "database")}
    assert fields <= set(env)
    geotwin_vars = {k for k in env if k.startswith("GEOTWIN_")}
    assert geotwin_vars <= {f"GEOTWIN_{name.upper()}" for name in Settings.model_fields}


def test_env_example_sets_what_compose_requires():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (ROOT / ".env.example").read_text()
    assert all(re.search(rf"^{name}=", example, re.M) for name in required)


def test_env_example_documents_every_setting():
    names = setting_names()
    assert "PGHOST" in names and "GEOTWIN_API__MAX_LIMIT" in names and "GEOTWIN_DB_REPLICAS" in names
    example = (ROOT / ".env.example").read_text()
    assert [n for n in names if not re.search(rf"^#? ?{n}=", example, re.M)] == []


def test_serve_warns_of_no_variable_that_compose_or_env_example_uses():
    """Every GEOTWIN_ variable the compose file or .env.example names is a setting or one compose itself reads:
    the warning about unknown settings stays for real typos."""
    used = set(re.findall(r"\$\{(GEOTWIN_[A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    used |= set(re.findall(r"^#? ?(GEOTWIN_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(COMPOSE_VARIABLES) <= used
    assert unknown_settings(dict.fromkeys(used, "1"), ROOT / "no.env") == []
    assert "GEOTWIN_MIRROR_KEY" in option_variables(), "the key a mirror's cron job keeps in .env is no typo"
    assert unknown_settings({"GEOTWIN_MIRROR_KEY": "gt_x"}, ROOT / "no.env", also=option_variables()) == []


def test_cache_profile_mounts_a_vcl_that_follows_the_service_headers():
    doc = compose()
    cache = doc["services"]["cache"]
    assert cache["profiles"] == ["cache"] and cache["image"].startswith("varnish:")
    assert cache["depends_on"]["app"]["condition"] == "service_healthy"
    for volume in cache["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
    vcl = (ROOT / "deploy" / "varnish" / "default.vcl").read_text()
    assert '.host = "app"' in vcl and "no-cache" in vcl and "private|no-store" in vcl
    assert "Authorization" in vcl and "X-API-Key" in vcl
    # one stored page per language the service speaks, whatever the browser's header says
    assert 'set req.http.Accept-Language = "de"' in vcl and "unset req.http.Accept-Language" in vcl
    assert "/ready" in " ".join(doc["services"]["app"]["healthcheck"]["test"])


def test_limits_profile_is_a_redis_that_the_documented_storage_url_reaches():
    redis = compose()["services"]["redis"]
    assert redis["profiles"] == ["limits"] and redis["image"].startswith("redis:")
    documented = re.search(r"GEOTWIN_LIMITS__STORAGE=(\S+)", (ROOT / ".env.example").read_text()).group(1)
    assert urlsplit(LimitSettings(storage=documented).storage).hostname == "redis"


def test_dockerfile_runs_the_packaged_entry_point_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    argv = yaml.safe_load(cmd)
    assert argv[0] in scripts and argv[1] in cli_commands()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(?!--from)(.+) \S+$", dockerfile, re.M):
        for path in shlex.split(src):
            assert (ROOT / path).exists(), path
    assert dockerfile.count("FROM ") >= 2  # multi-stage


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    block = lines[lines.index("```sh") + 1: lines.index("```sh") + 3]
    assert [line.split("#")[0].strip() for line in block] == ["./dev.sh serve", "./dev.sh test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev.sh test" in ci
