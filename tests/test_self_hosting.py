"""The README's "Self-hosting" section, run for real as far as no Docker engine allows: each command that would
run inside a container (`docker compose exec app geotwin …`, `docker compose exec -T db pg_dump …`) runs here
with the same arguments against a database of the test's own; the backup restores every feature, its history
and every collection's metadata."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from service.localdb import LocalCluster
from tests.conftest import FINGERPRINT

ROOT = Path(__file__).resolve().parent.parent
GEOTWIN = str(ROOT / ".venv" / "bin" / "geotwin")


def section_commands() -> list[str]:
    """The shell lines of the README's Self-hosting code blocks (continuations joined)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Self-hosting"):]
    section = section[:section.index("\n## ", 5)]
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def host(cluster: LocalCluster, tmp_path_factory):
    """What the containers would be: a database `geotwin` in its own cluster database, and a work directory."""
    name = "geotwin_selfhost"
    cluster.psql(f'DROP DATABASE IF EXISTS "{name}"')
    cluster.psql(f'CREATE DATABASE "{name}"')
    work = tmp_path_factory.mktemp("selfhost")
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(work / "gewerbeflaechen.gpkg"),
                    str(ROOT / "fixtures" / "demo" / "halle-commercial-sites.geojson")], check=True)
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin",
           "PGDATABASE": name, "PGPASSWORD": ""}
    return {"cluster": cluster, "db": name, "work": work, "env": env}


def run(host: dict, line: str) -> str:
    """One README line as it runs here; '' for the lines only Docker or the network can run."""
    if line.startswith("docker compose cp "):
        src, _ = shlex.split(line)[3:5]
        return subprocess.run(["cp", str(host["work"] / src), str(host["work"] / ("tmp-" + src))], check=True,
                              capture_output=True, text=True).stdout
    for prefix in ("docker compose exec app ", "docker compose exec -T db "):
        if line.startswith(prefix):
            command = line[len(prefix):]
            break
    else:
        return ""
    command = command.replace("/tmp/", str(host["work"] / "tmp-"))
    command = re.sub(r"\$\(date \+%F\)", "2026-11-22", command)
    if command.startswith(("pg_dump", "pg_restore")):  # the database is called geotwin in the container
        command = re.sub(r"(-d |-Fc )geotwin\b", rf"\g<1>{host['db']}", command)
        command = command.replace("-U geotwin", f"-U geotwin -h 127.0.0.1 -p {host['cluster'].port}")
    if command.startswith("geotwin "):
        command = GEOTWIN + command[len("geotwin"):]
    result = subprocess.run(command, shell=True, cwd=host["work"], env=host["env"], capture_output=True,
                            text=True)
    assert result.returncode == 0, (line, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


def test_the_readme_self_hosting_commands_work(host):
    lines = section_commands()
    ran = {}
    # A fresh installation: the container migrates at start.
    subprocess.run([GEOTWIN, "migrate"], env=host["env"], check=True, capture_output=True)
    for line in lines:
        if "keys revoke <id>" in line:
            listed = ran["keys list"]
            key_id = re.search(r"│\s*(\d+)\s*│", listed).group(1)
            line = line.replace("<id>", key_id)
        if line.startswith("docker compose exec -T db pg_restore"):
            before = host["cluster"].psql(FINGERPRINT, host["db"])
            host["cluster"].psql("DELETE FROM feature; UPDATE collection SET title = 'broken'", host["db"])
            dump = re.search(r"< (\S+)$", line).group(1)
            assert (host["work"] / dump).stat().st_size > 10_000
        out = run(host, line)
        for key in ("municipality add", "keys create", "keys list", "import ", "load-demo", "pg_dump",
                    "collections list"):
            if key in line:
                ran[key] = out
        if line.startswith("docker compose exec -T db pg_restore"):
            assert host["cluster"].psql(FINGERPRINT, host["db"]) == before
    assert re.search(r"^gt_[0-9a-f]+_\S+$", ran["keys create"], re.M)
    assert "saalekreis" in ran["keys list"] and "GIS-Stelle" in ran["keys list"]
    cluster, db = host["cluster"], host["db"]
    sites = cluster.psql("SELECT count(*) FROM feature f JOIN collection c ON c.id = f.collection_id JOIN "
                         "municipality m ON m.id = c.municipality_id WHERE m.slug = 'saalekreis' AND "
                         "c.slug = 'commercial-sites'", db)
    assert int(sites) == 6  # Halle's demo sites, imported under Saalekreis
    assert cluster.psql("SELECT revoked_at IS NOT NULL FROM api_key ORDER BY id LIMIT 1", db) == "t"
    assert {"municipality add", "keys create", "keys list", "import ", "pg_dump", "collections list"} <= set(ran)
    assert "saalekreis/" in ran["collections list"]  # a table, wrapped at 80 columns
    assert host["cluster"].psql("SELECT c.title FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                                "WHERE m.slug = 'saalekreis'", host["db"]) == "Gewerbeflächen Saalekreis"


def test_the_readme_shows_the_current_migration_head():
    """The `/ready` answer the README quotes names the head an admin's fresh installation reaches."""
    from service.migrate import head_revision

    quoted = re.findall(r'"migration":\s*"(\w+)"', (ROOT / "README.md").read_text())
    assert quoted and set(quoted) == {head_revision()}, quoted
