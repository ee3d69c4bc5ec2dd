"""The production Dagster instance (deploy/dagster.postgres.yaml) on a real Postgres, and the
other deployment files (README, "Running beyond one machine").

A file goes through our code location end to end with that instance and the warehouse on
Postgres too (SMM_WAREHOUSE_URL, another database of the same server): a catalog sync, a file
launched by order_csv_sensor, the order checks. Its runs, events, materializations and check
evaluations are read back from Postgres, through Dagster and with SQL, and its orders from the
warehouse database. The Postgres is a
throwaway one on 127.0.0.1 with a password (smm_pipeline_tests/postgres_server.py), reached
through the same DAGSTER_PG_* variables as in production.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
import yaml
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from smm_pipeline.config import load_settings
from smm_pipeline.warehouse.db import connect
from smm_pipeline.warehouse.postgres import PostgresTarget
from smm_pipeline_tests.conftest import one_panel_pipeline
from smm_pipeline_tests.dagster_helpers import drop_and_run

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
ORDERS = "service,link,quantity,ref\n1,https://x.com/a1,100,a-1\n1,https://x.com/a2,100,a-2\n"
ORDER_CHECKS = ("ambiguous_submissions", "stuck_orders", "orders_on_vanished_services")


def read_yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def dagster_home(tmp_path: Path, config: str) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / config, home / "dagster.yaml")
    return home


def use_database(monkeypatch: pytest.MonkeyPatch, database, home: Path) -> None:
    for name, value in database.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))


@pytest.fixture
def pg_home(tmp_path, monkeypatch, postgres_database):
    """A DAGSTER_HOME holding deploy/dagster.postgres.yaml, the environment pointing at a fresh
    Postgres database."""
    home = dagster_home(tmp_path, "dagster.postgres.yaml")
    use_database(monkeypatch, postgres_database, home)
    return home


def test_a_file_runs_end_to_end_on_the_postgres_instance(
    tmp_path, monkeypatch, sim, pg_home, postgres_database
):
    warehouse_db = postgres_database.server.create_database(f"{postgres_database.name}_wh"[:63])
    warehouse = PostgresTarget(warehouse_db.url())
    pipeline = one_panel_pipeline(tmp_path, monkeypatch, sim, warehouse)
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_monitoring_enabled and instance.freshness_enabled
        assert not instance.telemetry_enabled
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 10

        defs = pipeline.defs()
        catalog = defs.resolve_job_def("refresh_service_catalog").execute_in_process(
            instance=instance, partition_key="sim"
        )
        submission = drop_and_run(pipeline, instance, "orders.csv", ORDERS)
        assert submission.success
        checks = defs.resolve_job_def("check_orders").execute_in_process(instance=instance)
        assert checks.success
        assert sorted(o["link"] for o in sim.orders()) == ["https://x.com/a1", "https://x.com/a2"]
        run_ids = {catalog.run_id, submission.run_id, checks.run_id}

    # A second instance from the same file (another process: the webserver, the daemon) reads
    # everything back from Postgres.
    with dg.DagsterInstance.from_config(str(pg_home)) as reader:
        records = {r.dagster_run.run_id: r.dagster_run for r in reader.get_run_records()}
        assert set(records) == run_ids
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in records.values())
        assert records[submission.run_id].tags["smm/file"] == "orders.csv"
        assert records[submission.run_id].tags["smm/submitted"] == "2"
        events = [e.dagster_event.event_type for e in reader.all_logs(submission.run_id)
                  if e.dagster_event]  # fmt: skip
        assert events[-1] == dg.DagsterEventType.RUN_SUCCESS
        assert dg.DagsterEventType.STEP_SUCCESS in events

        [synced] = reader.fetch_materializations(dg.AssetKey("service_catalog"), limit=5).records
        assert (synced.run_id, synced.partition_key) == (catalog.run_id, "sim")
        written = reader.fetch_materializations(dg.AssetKey("orders"), limit=10).records
        assert submission.run_id in {r.run_id for r in written}
        for check in ORDER_CHECKS:
            [execution] = reader.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("orders"), check), limit=5
            )
            assert execution.run_id == checks.run_id
            assert execution.status == AssetCheckExecutionRecordStatus.SUCCEEDED
            assert execution.event.dagster_event.asset_check_evaluation_data.passed

    # The same rows, by SQL, in the database the environment names.
    engine = sqlalchemy.create_engine(postgres_database.sqlalchemy_url())
    try:
        with engine.connect() as con:
            runs = dict(con.execute(sqlalchemy.text("SELECT run_id, status FROM runs")).all())
            assert runs == dict.fromkeys(run_ids, "SUCCESS")
            kinds = {
                kind
                for (kind,) in con.execute(
                    sqlalchemy.text(
                        "SELECT DISTINCT dagster_event_type FROM event_logs WHERE run_id = :run"
                    ),
                    {"run": submission.run_id},
                )
            }
            stored = {  # the values Dagster stores (RUN_START is "PIPELINE_START")
                dg.DagsterEventType.RUN_START.value,
                dg.DagsterEventType.ASSET_MATERIALIZATION.value,
                dg.DagsterEventType.RUN_SUCCESS.value,
            }
            assert stored <= kinds
            executions = con.execute(
                sqlalchemy.text("SELECT check_name, execution_status FROM asset_check_executions")
            ).all()
            assert sorted(executions) == sorted((c, "SUCCEEDED") for c in ORDER_CHECKS)
    finally:
        engine.dispose()
    # The warehouse is the other database: the orders, their file and the views are there, and
    # nothing went to a DuckDB file, a journal or a budget file on this machine.
    with connect(warehouse, read_only=True) as conn:
        rows = conn.execute(
            "SELECT ref, submit_state, order_id IS NOT NULL FROM orders ORDER BY ref"
        ).fetchall()
        assert rows == [("a-1", "submitted", True), ("a-2", "submitted", True)]
        assert conn.execute("SELECT kind, outcome FROM processed_files").fetchall() == [
            ("orders", "processed")
        ]
        assert conn.execute("SELECT sum(orders) FROM delivery_by_service").fetchone()[0] == 2
    assert not list(tmp_path.rglob("*.duckdb")) and not list(tmp_path.rglob("*.journal"))
    assert not list(tmp_path.rglob("budget.sqlite"))
    # Nothing went to a SQLite fallback in DAGSTER_HOME (only step outputs and logs live there).
    assert list(pg_home.rglob("*.db")) == [] and not (pg_home / "history").exists()
    # It was the password from the environment that let Dagster in.
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=postgres_database.server.host,
            port=postgres_database.server.port,
            user=postgres_database.server.username,
            password="not-the-password",
            dbname=postgres_database.name,
        )


def test_the_docker_variant_is_the_postgres_file_plus_a_docker_run_launcher(
    tmp_path, monkeypatch, postgres_database
):
    docker, postgres = read_yaml("dagster.docker.yaml"), read_yaml("dagster.postgres.yaml")
    launcher = docker.pop("run_launcher")
    assert docker == postgres
    home = dagster_home(tmp_path, "dagster.docker.yaml")
    use_database(monkeypatch, postgres_database, home)
    monkeypatch.setenv("SMM_CODE_IMAGE", "registry.example.com/smm-pipeline:0123abc")
    from dagster_docker import DockerRunLauncher

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_launcher = instance.run_launcher  # built from the config: the schema accepted it
        assert isinstance(run_launcher, DockerRunLauncher)
        assert run_launcher.image == "registry.example.com/smm-pipeline:0123abc"
        assert set(postgres_database.env()) <= set(run_launcher.env_vars)
        assert {"PERSIANSMM_API_KEY", "PRIVATESMM_API_KEY"} <= set(run_launcher.env_vars)
        assert instance.run_monitoring_enabled
    volumes = launcher["config"]["container_kwargs"]["volumes"]
    assert {v.split(":")[1] for v in volumes} == {
        "/var/lib/smm",
        "/opt/dagster/dagster_home/storage",
        "/etc/smm/panels.yaml",
    }


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (str(key),), value
            yield from _walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield path + (str(i),), value
            yield from _walk(value, path + (str(i),))


@pytest.mark.parametrize(
    "name", ["dagster.postgres.yaml", "dagster.docker.yaml", "helm-values.yaml", "panels.yaml"]
)
def test_no_deployment_file_holds_a_password_or_a_key(name):
    text = (DEPLOY / name).read_text()
    assert not re.search(r"://[^/\s:@]+:[^@\s]*@", text), "a URL with credentials"
    for path, value in _walk(yaml.safe_load(text)):
        key = path[-1].lower()
        if re.search(r"password|passwd|api_key|token|postgres_url", key) and not key.startswith(
            "generate"
        ):
            assert value == {"env": value.get("env")} if isinstance(value, dict) else False, (
                f"{name}: {'.'.join(path)} must come from the environment ({{env: NAME}})"
            )
        if path[-2:-1] == ("env_vars",):  # forwarded by name, never NAME=value
            assert "=" not in value, f"{name}: {'.'.join(path)} carries a value"
    if name == "helm-values.yaml":
        values = yaml.safe_load(text)
        assert values["generatePostgresqlPasswordSecret"] is False
        assert "postgresqlPassword" not in values["postgresql"]


def test_the_deployment_settings_agree_with_the_shipped_dagster_yaml():
    shipped = yaml.safe_load((REPO / "dagster.yaml").read_text())
    postgres = read_yaml("dagster.postgres.yaml")
    assert postgres["run_monitoring"] == shipped["run_monitoring"]
    assert postgres["telemetry"] == shipped["telemetry"] == {"enabled": False}
    assert postgres["freshness"] == shipped["freshness"] == {"enabled": True}
    assert postgres["storage"]["postgres"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "scheme": "postgresql+psycopg2",
    }

    helm = read_yaml("helm-values.yaml")
    camel = {
        "enabled": "enabled",
        "poll_interval_seconds": "pollIntervalSeconds",
        "free_slots_after_run_end_seconds": "freeSlotsAfterRunEndSeconds",
        "start_timeout_seconds": "startTimeoutSeconds",
        "cancel_timeout_seconds": "cancelTimeoutSeconds",
        "max_resume_run_attempts": "maxResumeRunAttempts",
    }
    monitoring = helm["dagsterDaemon"]["runMonitoring"]
    assert {k: monitoring[camel[k]] for k in postgres["run_monitoring"]} == postgres[
        "run_monitoring"
    ]
    queued = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queue = postgres["run_queue"]
    assert queued == {
        "maxConcurrentRuns": postgres["concurrency"]["runs"]["max_concurrent_runs"],
        "dequeueIntervalSeconds": queue["dequeue_interval_seconds"],
        "dequeueUseThreads": queue["dequeue_use_threads"],
        "dequeueNumWorkers": queue["dequeue_num_workers"],
    }
    assert helm["telemetry"] == postgres["telemetry"]
    assert helm["additionalInstanceConfig"]["freshness"] == postgres["freshness"]
    [deployment] = helm["dagster-user-deployments"]["deployments"]
    assert deployment["port"] == 4000
    assert deployment["dagsterApiGrpcArgs"][:2] == ["-m", "smm_pipeline.definitions"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_the_image_default_panels_file_loads_the_code_location(tmp_path, monkeypatch):
    settings = load_settings(DEPLOY / "panels.yaml", check_keys=False)
    assert [p.name for p in settings.panels if p.enabled] == ["persiansmm"]
    assert "simulator" not in [p.name for p in settings.panels]
    monkeypatch.setenv("SMM_PANELS_FILE", str(DEPLOY / "panels.yaml"))
    monkeypatch.setenv("SMM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SMM_DUCKDB_PATH", raising=False)
    from smm_pipeline.definitions import load_definitions

    defs = load_definitions()
    assert defs.resolve_job_def("submit_orders") is not None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_has_the_package_and_never_the_devkit_or_the_dev_extra():
    instructions = dockerfile_instructions()
    installs = [
        command
        for kind, args in instructions
        if kind == "RUN"
        for command in (c.strip() for c in re.findall(r"pip install[^&;|]*", args))
    ]
    assert installs and not [c for c in installs if "devkit" in c or "dev" in c.split("[")[-1]]
    assert 'pip install --editable ".[${EXTRAS}]"' in installs
    assert any(
        kind == "ARG" and args.startswith("EXTRAS=") and "postgres" in args.split("=")[1]
        for kind, args in instructions
    )
    [user] = [args for kind, args in instructions if kind == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    [cmd] = [args for kind, args in instructions if kind == "CMD"]
    command = yaml.safe_load(cmd)  # the JSON array
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == "smm_pipeline.definitions"
    assert command[command.index("-p") + 1] == "4000"
    env = " ".join(args for kind, args in instructions if kind == "ENV")
    assert "SMM_PANELS_FILE=/etc/smm/panels.yaml" in env
    assert ("COPY", "deploy/panels.yaml /etc/smm/panels.yaml") in instructions

    # The build context .dockerignore lets through: what the COPY lines need, nothing else.
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = exclude_paths(str(REPO), patterns)
    tops = {path.split("/")[0] for path in context}
    assert tops <= {"pyproject.toml", "README.md", "smm_pipeline", "deploy", "Dockerfile",
                    ".dockerignore"}  # fmt: skip
    assert {"pyproject.toml", "README.md", "deploy/panels.yaml"} <= context
    assert "smm_pipeline/definitions.py" in context
    assert not [p for p in context if p.startswith("deploy/") and p != "deploy/panels.yaml"]
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]
