"""The Docker deployment (docker/): static checks that need no Docker engine.

compose.yaml must name every service, build the Airflow services from docker/Dockerfile, mount only
paths that exist, and wire the project's database; the Dockerfile must copy only what exists and be
based on the Airflow version the project is developed and tested against.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-worker", "airflow-worker-score")
ALL_SERVICES = {"postgres", "redis", *AIRFLOW_SERVICES}
PROJECT_DB = "profile_audit"
# name[:port]/path/...:tag — lower-case path components, a tag that is not empty.
IMAGE_RE = re.compile(r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                      r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
VAR_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute_defaults(value: str) -> str:
    """Compose interpolation as it happens with none of the variables set: ${VAR:-default} -> default."""
    return VAR_DEFAULT.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves anchors and `<<` merge keys


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                env[key] = value
    return env


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host source after default substitution, container target) for each bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((substitute_defaults(volume["source"]), volume["target"]))
            continue
        source, target = substitute_defaults(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def named_volumes(service: dict) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                names.append(volume["source"])
            continue
        source = substitute_defaults(volume).split(":")[0]
        if not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def test_compose_has_all_services(services):
    assert ALL_SERVICES <= set(services), f"missing: {sorted(ALL_SERVICES - set(services))}"


def test_airflow_services_build_from_the_repo_dockerfile(services):
    for name in AIRFLOW_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name}: no build section"
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, f"{name}: build context {context} is not the repository root"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert dockerfile.resolve() == DOCKERFILE, f"{name}: builds from {dockerfile}, not docker/Dockerfile"


def test_airflow_services_run_the_right_commands(services):
    expected = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                "airflow-dag-processor": "dag-processor", "airflow-worker": "celery worker --queues default",
                # docs/airflow.md, Deploying step 5, as tests/test_celery.py runs it: the score queue, fewer slots
                "airflow-worker-score": "celery worker --queues score --concurrency 2"}
    for name, command in expected.items():
        got = services[name]["command"]
        assert substitute_defaults(" ".join(got) if isinstance(got, list) else got) == command, name
    init = services["airflow-init"]["command"]
    init = " ".join(init) if isinstance(init, list) else init
    for step in ("airflow db migrate", "profile-audit --airflow-conn profile_audit_db db upgrade",
                 'airflow pools set profile_audit_score "$${PROFILE_AUDIT_SCORE_SLOTS}"'):
        assert step in init, f"airflow-init does not run `{step}`"


def test_relative_host_paths_exist(services):
    checked = 0
    for name, service in services.items():
        for source, _target in bind_mounts(service):
            if source.startswith((".", "~")) or not Path(source).is_absolute():
                assert not source.startswith("~"), f"{name}: {source} depends on the host's home"
                path = (DOCKER / source).resolve()
                assert path.exists(), f"{name}: bind source {source} ({path}) does not exist"
                assert path.is_relative_to(REPO), f"{name}: bind source {source} leaves the repository"
                checked += 1
    assert checked >= 2, "expected at least the landing folder and the postgres init scripts as bind mounts"


def test_postgres_init_creates_the_project_database(services):
    mounts = dict((t, s) for s, t in bind_mounts(services["postgres"]))
    assert "/docker-entrypoint-initdb.d" in mounts, "postgres: no init scripts mounted"
    init_dir = (DOCKER / mounts["/docker-entrypoint-initdb.d"]).resolve()
    scripts = sorted(init_dir.glob("*.sql")) + sorted(init_dir.glob("*.sh"))
    assert scripts, f"no init scripts in {init_dir}"
    text = "\n".join(p.read_text() for p in scripts)
    assert re.search(rf"create\s+database\s+\"?{PROJECT_DB}\"?", text, re.IGNORECASE), \
        f"no init script creates database {PROJECT_DB}"
    assert env_of(services["postgres"]).get("POSTGRES_DB") == "airflow"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    used = {v for s in services.values() for v in named_volumes(s)}
    assert {"postgres-data", "profile-audit-data"} <= used
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"
    for name in AIRFLOW_SERVICES:
        targets = {t for t in (substitute_defaults(v).split(":")[1] for v in services[name]["volumes"]
                               if isinstance(v, str))}
        assert "/opt/profile-audit-data" in targets, f"{name}: profile-audit-data not mounted"


def test_dockerfile_copy_sources_exist():
    copies = [args for keyword, args in dockerfile_instructions() if keyword in ("COPY", "ADD")]
    assert copies, "Dockerfile copies nothing"
    copied = []
    for args in copies:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        assert not any(p.startswith("--from") for p in shlex.split(args)), "multi-stage COPY not expected"
        assert len(parts) >= 2, f"COPY {args!r}: needs a source and a destination"
        for source in parts[:-1]:
            assert not Path(source).is_absolute() and ".." not in Path(source).parts, source
            assert (REPO / source).exists(), f"COPY source {source} does not exist in the repository root"
            copied.append(Path(source).parts[0])
    for needed in ("pyproject.toml", "pipeline", "detectors", "sql", "dags"):
        assert needed in copied, f"Dockerfile does not copy {needed}"


def test_dockerfile_base_image_matches_installed_airflow():
    import airflow

    froms = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1, f"expected one FROM, got {froms}"
    image = froms[0]
    name, _, tag = image.rpartition(":")
    assert name == "apache/airflow", image
    match = re.fullmatch(r"(\d+\.\d+\.\d+)-python(\d+\.\d+)", tag)
    assert match, f"tag {tag!r} is not VERSION-pythonX.Y"
    assert match.group(1) == airflow.__version__, \
        f"Dockerfile uses Airflow {match.group(1)}, the project is tested with {airflow.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"apache-airflow=={match.group(1)}"' in pyproject, "pyproject pins another Airflow version"


def test_images_are_well_formed(services):
    images = [services[s]["image"] for s in services if "image" in services[s]]
    images += [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert "postgres:16" in images and "redis:7" in images
    assert any(i.startswith("apache/airflow:") for i in images)
    for image in images:
        assert IMAGE_RE.match(substitute_defaults(image)), f"image {image!r} is not name:tag"
    assert IMAGE_RE.match("postgres:16") and not IMAGE_RE.match("postgres") and not IMAGE_RE.match("Postgres:16")


def test_project_database_wiring(services):
    """docs/airflow.md, Deploying step 3: airflow-init adds the connection profile_audit_db to Airflow's
    metadata database (pointing at the project's database) and migrates through it; nothing else names it."""
    init = services["airflow-init"]
    uri = env_of(init).get("PROFILE_AUDIT_DB_URI", "")
    assert uri.startswith("postgresql://") and uri.rsplit("/", 1)[-1] == PROJECT_DB and "@postgres" in uri, uri
    command = init["command"]
    command = "\n".join(command) if isinstance(command, list) else command
    assert 'airflow connections add profile_audit_db --conn-uri "$${PROFILE_AUDIT_DB_URI}"' in command
    assert command.index("connections add") < command.index("db upgrade")
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        assert "PROFILE_AUDIT_DATABASE_URL" not in env and "AIRFLOW_CONN_PROFILE_AUDIT_DB" not in env, name
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert env.get("AIRFLOW__API_AUTH__JWT_SECRET"), f"{name}: no shared JWT secret"
    secrets = {env_of(services[n])["AIRFLOW__API_AUTH__JWT_SECRET"] for n in AIRFLOW_SERVICES}
    assert len(secrets) == 1, "Airflow services must share one JWT secret"


def test_compose_follows_the_deployment_guide(services):
    """docs/airflow.md "Deploying": the score pool exists before tasks need it, the CLI in the containers
    reads the DAGs' connection, and the score queue is one setting."""
    from pipeline.airflow.params import SCORE_QUEUE_ENV
    from pipeline.airflow.tasks import CONNECTION_ID, SCORE_POOL

    init = services["airflow-init"]["command"]
    init = "\n".join(init) if isinstance(init, list) else init
    assert f"airflow pools set {SCORE_POOL} " in init
    assert init.index("airflow db migrate") < init.index(f"airflow pools set {SCORE_POOL}")
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        assert env.get("PROFILE_AUDIT_AIRFLOW_CONN") == CONNECTION_ID, name
        assert substitute_defaults(env.get(SCORE_QUEUE_ENV, "")) == "score", name
        assert "PROFILE_AUDIT_ALLOW_EMBEDDED" not in env, f"{name}: tasks must not fall back to an embedded server"
    # the score worker serves that queue with as many slots as the pool
    score_worker = substitute_defaults(services["airflow-worker-score"]["command"]).split()
    slots = substitute_defaults(env_of(services["airflow-init"])["PROFILE_AUDIT_SCORE_SLOTS"])
    assert score_worker[score_worker.index("--queues") + 1] == "score"
    assert score_worker[score_worker.index("--concurrency") + 1] == slots


def test_paths_agree_between_dockerfile_and_compose(services):
    image_env = dockerfile_env()
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "PROFILE_AUDIT_HOME", "PROFILE_AUDIT_LANDING_DIR", "HF_HOME"):
        assert key in image_env, f"Dockerfile sets no {key}"
        for name in AIRFLOW_SERVICES:
            got = env_of(services[name]).get(key, image_env[key])
            assert got == image_env[key], f"{name}: {key}={got!r}, Dockerfile says {image_env[key]!r}"
    assert image_env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/profile-audit/dags"
    landing = image_env["PROFILE_AUDIT_LANDING_DIR"]
    for name in AIRFLOW_SERVICES:
        targets = [t for _, t in bind_mounts(services[name])]
        assert landing in targets, f"{name}: nothing bind-mounted at the landing folder {landing}"
        home = image_env["PROFILE_AUDIT_HOME"]
        assert not Path(landing).is_relative_to(home), "landing folder must not sit inside the data volume"


def test_substitute_defaults():
    assert substitute_defaults("${PROFILE_AUDIT_LANDING:-./landing}:/x") == "./landing:/x"
    assert substitute_defaults("${UNSET}") == ""


GRAFANA = DOCKER / "grafana"


def dashboard_views() -> set[str]:
    text = (REPO / "sql" / "views" / "dashboards.sql").read_text()
    return set(re.findall(r"^create view (\w+)", text, re.MULTILINE))


def dashboard_queries() -> list[str]:
    """Every rawSql of the provisioned Grafana dashboards (the JSON must parse)."""
    import json

    files = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert files, "no Grafana dashboard JSON in docker/grafana/dashboards"
    queries = []
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"], path.name
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
            queries += [t["rawSql"] for t in panel["targets"]]
    return queries


def test_grafana_dashboard_queries_only_the_dashboard_views():
    views = dashboard_views()
    assert len(views) == 5, views
    queries = dashboard_queries()
    assert len(queries) >= 4
    used = set()
    for sql in queries:
        relations = {m.lower() for m in re.findall(r"\b(?:from|join)\s+([A-Za-z_][\w.]*)", sql, re.IGNORECASE)}
        assert relations and relations <= views, f"query reads {sorted(relations - views)}: {sql}"
        assert not re.search(r"\b(insert|update|delete|drop|alter|create|grant|truncate)\b", sql, re.IGNORECASE), sql
        used |= relations
    assert used == views, f"views no panel shows: {sorted(views - used)}"


def test_grafana_service_is_provisioned_with_the_reader_datasource(services):
    grafana = services["grafana"]
    assert IMAGE_RE.match(grafana["image"]) and grafana["image"].startswith("grafana/grafana:")
    mounts = dict((t, s) for s, t in bind_mounts(grafana))
    assert (DOCKER / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "profile-audit.yaml").read_text())["datasources"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "profile-audit.yaml").read_text())["providers"]
    dashboards_in = providers[0]["options"]["path"]
    assert (DOCKER / mounts[dashboards_in]).resolve() == GRAFANA / "dashboards"
    (source,) = sources
    assert source["url"] == "postgres:5432" and source["jsonData"]["database"] == PROJECT_DB
    assert source["type"] == "grafana-postgresql-datasource"
    import json

    for path in (GRAFANA / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert {t["datasource"]["uid"] for t in panel["targets"]} == {source["uid"]}, panel["title"]
    # the datasource logs in as the user the postgres init script puts in profile_audit_reader
    user_var = source["user"].lstrip("$").strip("{}")
    user = env_of(grafana)[user_var]
    assert env_of(services["postgres"])[user_var] == user
    assert env_of(grafana)["PROFILE_AUDIT_GRAFANA_DB_PASSWORD"] == env_of(services["postgres"])["PROFILE_AUDIT_GRAFANA_DB_PASSWORD"]
    init = (DOCKER / "postgres-init" / "02-dashboard-reader.sh").read_text()
    assert "CREATE ROLE profile_audit_reader NOLOGIN" in init and "IN ROLE profile_audit_reader" in init
    assert user_var in init
    depends = grafana["depends_on"]
    assert depends["airflow-init"]["condition"] == "service_completed_successfully", "views exist after db upgrade"
