"""MLflow tracking for pipeline stages: one stage execution is one MLflow run.

Store location
    By default runs go to a SQLite database inside the results folder,
    ``sqlite:///<abs results>/mlflow.db`` (never the deprecated ``./mlruns`` file store), with
    artifacts under ``<abs results>/mlartifacts/<experiment name>/<run id>/``.
    ``MLFLOW_TRACKING_URI`` or a configured URI (e.g. an ``http://host:5000`` server on a
    cluster) overrides the default; the environment variable wins over the configured value.

Parallel jobs on one SQLite store (checked against MLflow 3.17)
    * Creating the schema is not safe to race: ``SqlAlchemyStore.__init__`` creates the tables
      and runs the alembic migrations of an empty database without any lock; six processes
      opening one fresh database at once fail with "duplicate column name". :func:`init_store`
      therefore creates/migrates the database and creates the experiment under an exclusive
      ``fcntl.flock`` on ``<db>.lock`` next to it, and every public entry point calls it first.
      Once the store exists, a read-only check (schema at MLflow's head revision, experiment
      present) skips the lock, so jobs starting together do not queue on it.
    * MLflow sets ``PRAGMA busy_timeout = 20000`` on every session it opens, so SQLite waits
      up to 20 s for a lock by itself. No ``MLFLOW_SQLALCHEMYSTORE_*`` variable sets the busy
      timeout: the existing ones (pool size/recycle/overflow/class, echo) only shape the
      connection pool and do not change locking, so none is set here. With the busy timeout,
      6 processes writing 300 metrics each at once saw no lock error.
    * "database is locked" still happens when a lock is held for longer than 20 s (slow
      network filesystem, heavy load, a reader such as a UI holding a transaction). MLflow
      surfaces it as ``MlflowException(TEMPORARILY_UNAVAILABLE)`` and only retries Postgres
      deadlocks itself, so every store call made here is retried on lock errors with
      exponential backoff and full jitter until ``$LOOKRIGHT_TRACKING_RETRY_S`` (default 300 s)
      have passed (each attempt itself may wait 20 s more), then
      :class:`TrackingStoreBusyError` names the URI. Retries are safe: a failed SQLite
      transaction is rolled back, re-logged equal params are ignored and duplicate metric rows
      are dropped by the store.
    * The journal mode stays SQLite's default (rollback journal): WAL would let readers run
      beside a writer, but it needs memory shared between processes, which the network
      filesystems of SLURM clusters do not provide. For many concurrent cluster jobs prefer an
      MLflow server (``http://``), which needs none of this.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import getpass
import json
import logging
import os
import random
import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lookright.config import config_hash, plain
from lookright.io import parquet_digest

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "DEFAULT_EXPERIMENT",
    "StageRun",
    "TrackingStoreBusyError",
    "config_hash",
    "default_tracking_uri",
    "find_resumable_run",
    "find_runs",
    "flatten_config",
    "init_store",
    "resolve_tracking_uri",
    "stage_run",
]

DEFAULT_EXPERIMENT = "lookright"
DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
RETRY_BUDGET_ENV = "LOOKRIGHT_TRACKING_RETRY_S"
DEFAULT_RETRY_BUDGET_S = 300.0

TAG_STAGE = "lookright.stages.base"
TAG_CONFIG_HASH = "lookright.config_hash"
TAG_GIT_COMMIT = "lookright.git_commit"
TAG_RUN_KEY = "lookright.run_key"
TAG_UPSTREAM_PREFIX = "lookright.upstream."
TAG_HOST = "lookright.host"
TAG_SLURM_JOB = "lookright.slurm_job_id"
TAG_INVOCATION = "lookright.invocation"
# One id per `snakemake` invocation (set by the Snakefile, inherited by local and SLURM jobs),
# so the runs of one pipeline execution can be grouped and filtered in the UI.
INVOCATION_ENV = "LOOKRIGHT_INVOCATION"
# Seconds between system-metric samples (CPU/RAM/disk/network, GPU where there is one); 0 = off.
SYSTEM_METRICS_ENV = "LOOKRIGHT_SYSTEM_METRICS_S"
DEFAULT_SYSTEM_METRICS_S = 10.0
# The experiment type the MLflow 3 UI reads: "custom_model_development" opens the runs table,
# not the GenAI traces overview (MLflow 3.17 UI, ExperimentKind enum).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# MLflow 3.17 limits (mlflow.utils.validation); batches stay within one store chunk so that a
# retried call repeats one atomic write only.
MAX_PARAM_VALUE_LEN = 6000
MAX_TAG_VALUE_LEN = 8000
MAX_KEY_LEN = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

_LOCKED_MARKERS = ("database is locked", "database table is locked", "database schema is locked")
_BAD_KEY_CHARS = re.compile(r"[^\w.\- :]")
_DONE = "FINISHED"

_log = logging.getLogger(__name__)
_experiment_ids: dict[tuple[str, str], str] = {}  # (uri, experiment) set up here
T = TypeVar("T")


class TrackingStoreBusyError(RuntimeError):
    """The tracking store stayed locked for longer than the retry budget."""


# --------------------------------------------------------------------------- URIs


def default_tracking_uri(results_dir: str | Path) -> str:
    """SQLite store inside ``results_dir``: ``sqlite:///<abs results_dir>/mlflow.db``."""
    return f"sqlite:///{Path(results_dir).expanduser().resolve() / DB_FILENAME}"


def resolve_tracking_uri(configured: str | None, results_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``configured``, else :func:`default_tracking_uri`."""
    return os.environ.get(TRACKING_URI_ENV) or configured or default_tracking_uri(results_dir)


def _sqlite_path(uri: str) -> Path | None:
    """Database file of a ``sqlite:///`` URI (None for other schemes or in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


# --------------------------------------------------------------------------- retries and logging


def _quiet_logging() -> None:
    """Silence alembic's migration chatter and MLflow's logs of retried lock errors."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    db_logger = logging.getLogger("mlflow.store.db.utils")
    db_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropLockedRecords) for f in db_logger.filters):
        db_logger.addFilter(_DropLockedRecords())


class _DropLockedRecords(logging.Filter):
    """Drops log records about "database is locked" errors, which are retried."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = f"{record.getMessage()} {record.exc_info[1] if record.exc_info else ''}"
        return not _mentions_lock(text)


def _mentions_lock(text: str) -> bool:
    text = text.lower()
    return any(marker in text for marker in _LOCKED_MARKERS)


def _is_locked_error(exc: BaseException) -> bool:
    """True when ``exc`` or any exception in its chain is a SQLite lock error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _mentions_lock(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _retry_budget() -> float:
    return float(os.environ.get(RETRY_BUDGET_ENV, DEFAULT_RETRY_BUDGET_S))


def _retry(fn: Callable[[], T], uri: str, what: str) -> T:
    """Call ``fn``, retrying SQLite lock errors with exponential backoff and full jitter."""
    budget = _retry_budget()
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _is_locked_error(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrackingStoreBusyError(
                    f"MLflow tracking store {uri} stayed locked for more than {budget:.0f} s "
                    f"while trying to {what}; raise ${RETRY_BUDGET_ENV} or use an MLflow server."
                ) from exc
            _log.debug("%s: %s is locked, retrying", what, uri)
            time.sleep(min(random.uniform(0.0, delay), left))
            delay = min(delay * 2, 5.0)


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """Exclusive ``flock`` on ``path``, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f} s") from exc
                time.sleep(random.uniform(0.02, 0.2))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- store set-up


def init_store(uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create and migrate the store once, create ``experiment``; return its id.

    Idempotent and safe to call from many processes at once: for SQLite, unless a cheap
    read-only check finds the schema current and the experiment present, the set-up runs under
    an exclusive file lock on ``<db>.lock``. Remote stores are only asked for the experiment.
    """
    _quiet_logging()
    path = _sqlite_path(uri)
    if path is None:
        return _retry(lambda: _ensure_experiment(_client(uri), experiment), uri, "get experiment")
    if (uri, experiment) not in _experiment_ids:
        if not _store_ready(path, experiment):
            _locked_setup(uri, path, experiment)
        _experiment_ids[uri, experiment] = _retry(
            lambda: _ensure_experiment(_client(uri), experiment), uri, "get experiment"
        )
    return _experiment_ids[uri, experiment]


def _store_ready(path: Path, experiment: str) -> bool:
    """Whether the database schema is at MLflow's head revision and ``experiment`` is active.

    Read-only, without MLflow's store or the file lock, so that jobs starting together do not
    queue on the lock once the store exists. Any error means "not ready" (the locked path
    decides).
    """
    from mlflow.store.db.utils import _get_latest_schema_revision

    if not path.is_file():
        return False
    query = "SELECT 1 FROM experiments WHERE name = ? AND lifecycle_stage = 'active'"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
            con.execute("PRAGMA busy_timeout = 20000")
            revisions = [row[0] for row in con.execute("SELECT version_num FROM alembic_version")]
            found = con.execute(query, (experiment,)).fetchone() is not None
    except sqlite3.Error:
        return False
    return found and revisions == [_get_latest_schema_revision()]


def _locked_setup(uri: str, path: Path, experiment: str) -> None:
    """Create/migrate the database and create the experiment, holding ``<db>.lock``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock"), _retry_budget()):
        artifact_root = path.resolve().parent / ARTIFACTS_DIRNAME
        _retry(lambda: _migrate(uri, artifact_root), uri, "create the database")
        _retry(lambda: _ensure_experiment(_client(uri), experiment), uri, "create experiment")


def _migrate(uri: str, artifact_root: Path) -> None:
    """Create the tables of a fresh database, or upgrade an old schema, then open the store."""
    from mlflow.store.db import utils as db_utils
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = db_utils.create_sqlalchemy_engine_with_retry(uri)
    try:
        if db_utils._is_empty_database(engine):
            db_utils._initialize_tables(engine)
        elif db_utils._get_schema_version(engine) != db_utils._get_latest_schema_revision():
            _log.warning("Upgrading the schema of MLflow store %s", uri)
            db_utils._upgrade_db(engine)
    finally:
        engine.dispose()
    # Opening the store once here also creates the "Default" experiment while still locked.
    SqlAlchemyStore(uri, artifact_root.as_uri())


def _ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of the active experiment ``name``, created (or restored) when needed."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                _artifact_location(client, name),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException as exc:  # another process may have created it meanwhile
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        _log.warning("Restoring deleted MLflow experiment %r", name)
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # a store made by an older lookright
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _artifact_location(client: MlflowClient, name: str) -> str | None:
    """``<db dir>/mlartifacts/<name>`` for SQLite stores, server default otherwise."""
    path = _sqlite_path(client.tracking_uri)
    if path is None:
        return None
    safe = _BAD_KEY_CHARS.sub("_", name)
    return (path.resolve().parent / ARTIFACTS_DIRNAME / safe).as_uri()


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


# --------------------------------------------------------------------------- config → params/tags


def _safe_key(key: str) -> str:
    """A valid MLflow param/tag key: bad characters become ``_``, at most 250 chars."""
    return (_BAD_KEY_CHARS.sub("_", key) or "_")[:MAX_KEY_LEN]


def _param_value(value: Any) -> str:
    if isinstance(value, list | dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_VALUE_LEN]


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings with dotted keys into MLflow params (lists as JSON, truncated)."""
    flat: dict[str, str] = {}
    for key, value in plain(config).items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, name))
        else:
            flat[_safe_key(name)] = _param_value(value)
    return flat


def _tag_dict(tags: Mapping[str, Any]) -> dict[str, str]:
    return {_safe_key(str(k)): str(v)[:MAX_TAG_VALUE_LEN] for k, v in tags.items()}


@lru_cache(maxsize=8)
def _git_commit(cwd: str) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _stage_tags(
    stage: str,
    digest: str,
    tags: Mapping[str, Any] | None,
    upstream_run_ids: Mapping[str, str] | None,
    run_key: str | None,
) -> dict[str, str]:
    """System tags of a stage run, then the caller's tags."""
    commit = _git_commit(os.getcwd())
    out = {
        TAG_STAGE: stage,
        TAG_CONFIG_HASH: digest,
        TAG_GIT_COMMIT: commit,
        TAG_HOST: socket.gethostname(),
        "mlflow.user": _user(),
    }
    if commit != "unknown":
        out["mlflow.source.git.commit"] = commit
    if os.environ.get("SLURM_JOB_ID"):
        out[TAG_SLURM_JOB] = os.environ["SLURM_JOB_ID"]
    if os.environ.get(INVOCATION_ENV):
        out[TAG_INVOCATION] = os.environ[INVOCATION_ENV]
    if run_key is not None:
        out[TAG_RUN_KEY] = run_key
    for upstream, run_id in (upstream_run_ids or {}).items():
        out[f"{TAG_UPSTREAM_PREFIX}{upstream}"] = run_id
    out.update(tags or {})
    return _tag_dict(out)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- datasets

_MLFLOW_TYPES = {
    "int64": "long",
    "int32": "integer",
    "int16": "integer",
    "int8": "integer",
    "double": "double",
    "float": "float",
    "bool": "boolean",
    "string": "string",
    "large_string": "string",
    "binary": "binary",
    "large_binary": "binary",
}


def _colspec(path: str | Path) -> list[dict[str, str]]:
    """MLflow column specs of a Parquet file's scalar columns (nested ones are in the profile)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    return [
        {"type": _MLFLOW_TYPES[str(f.type)], "name": f.name, "required": not f.nullable}
        for f in schema
        if str(f.type) in _MLFLOW_TYPES
    ]


def _profile(path: str | Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    return {
        "num_rows": metadata.num_rows,
        "columns": {f.name: str(f.type) for f in metadata.schema.to_arrow_schema()},
    }


# --------------------------------------------------------------------------- runs


class StageRun:
    """Handle on the MLflow run of one stage execution; every call is retried when locked."""

    def __init__(self, client: MlflowClient, run_id: str, *, resumed: bool = False) -> None:
        self._client = client
        self._run_id = run_id
        self.resumed = resumed

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def tracking_uri(self) -> str:
        return self._client.tracking_uri

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return _retry(fn, self.tracking_uri, f"{what} (run {self._run_id})")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several metrics at one ``step`` (0 when None) in one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(_safe_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        for chunk in _chunks(rows, MAX_METRICS_PER_BATCH):
            self._call("log metrics", lambda c=chunk: self._client.log_batch(self._run_id, c))

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.log_metrics({name: value}, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; nested mappings are flattened like the stage config."""
        from mlflow.entities import Param

        rows = [Param(k, v) for k, v in flatten_config(params).items()]
        for chunk in _chunks(rows, MAX_PARAMS_TAGS_PER_BATCH):
            self._call("log params", lambda c=chunk: self._client.log_batch(self._run_id, params=c))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        rows = [RunTag(k, v) for k, v in _tag_dict(tags).items()]
        for chunk in _chunks(rows, MAX_PARAMS_TAGS_PER_BATCH):
            self._call("set tags", lambda c=chunk: self._client.log_batch(self._run_id, tags=c))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a whole directory) into the run's artifacts."""
        local = str(path)
        if Path(local).is_dir():
            log = self._client.log_artifacts
        else:
            log = self._client.log_artifact
        self._call("log artifact", lambda: log(self._run_id, local, artifact_path))

    def log_input_table(self, path: str | Path, name: str, context: str) -> None:
        """Record a Parquet table as an input dataset of the run (MLflow's Datasets column).

        ``name`` (e.g. ``samples``), ``context`` (``training``, ``evaluation``, ...); the
        digest comes from the file's Parquet footer (:func:`lookright.io.parquet_digest`), the
        profile holds its row count and column types; nothing of the data is copied.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=parquet_digest(path),
            source_type="local",
            source=json.dumps({"uri": str(Path(path).resolve())}),
            schema=json.dumps({"mlflow_colspec": _colspec(path)}),
            profile=json.dumps(_profile(path)),
        )
        entry = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
        self._call("log input", lambda: self._client.log_inputs(self._run_id, datasets=[entry]))

    def log_table(self, frame: Any, artifact_file: str) -> None:
        """A table artifact (``.json``) that the MLflow UI shows as a table."""
        self._call("log table", lambda: self._client.log_table(self._run_id, frame, artifact_file))

    def last_step(self, name: str) -> int | None:
        """Largest step logged for metric ``name`` (None if never logged): resume from here."""
        history = self._call(
            "read metric", lambda: self._client.get_metric_history(self.run_id, name)
        )
        return max((m.step for m in history), default=None)


@contextmanager
def stage_run(
    stage: str,
    *,
    config: Mapping[str, Any],
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    upstream_run_ids: Mapping[str, str] | None = None,
    run_key: str | None = None,
    resume: bool = False,
) -> Iterator[StageRun]:
    """One MLflow run around a stage execution.

    Starts a run tagged with the stage, config hash, git commit, ``run_key`` and upstream run
    ids, with the flattened ``config`` as params. It resumes ``resume_run_id`` instead, or with
    ``resume=True`` the latest unfinished run of this stage with the same ``run_key`` and config
    hash (see :func:`find_resumable_run`). The run ends FINISHED (also on ``sys.exit(0)``), FAILED
    on an exception (which is re-raised) or KILLED on KeyboardInterrupt.
    """
    experiment_id = init_store(tracking_uri, experiment)
    client = _client(tracking_uri)
    digest = config_hash(config)
    run_tags = _stage_tags(stage, digest, tags, upstream_run_ids, run_key)
    if resume_run_id is None and resume and run_key is not None:
        found = find_resumable_run(
            tracking_uri, stage, run_key, experiment=experiment, config_hash=digest
        )
        resume_run_id = found.info.run_id if found else None
    if resume_run_id is not None:
        run = _resume(client, resume_run_id, run_tags, flatten_config(config))
    else:
        run = _start(client, experiment_id, run_name or stage, run_tags, flatten_config(config))
    try:
        with _system_metrics(run):
            yield run
    except GeneratorExit:  # the context was abandoned, not exited: leave the run as it is
        raise
    except KeyboardInterrupt:
        _end_quietly(run, "KILLED")
        raise
    except SystemExit as exc:
        _end_quietly(run, "FINISHED" if exc.code in (0, None) else "FAILED")
        raise
    except BaseException:
        _end_quietly(run, "FAILED")
        raise
    _end(run, "FINISHED")


@contextmanager
def _system_metrics(run: StageRun) -> Iterator[None]:
    """Sample CPU/RAM/disk/network (and GPU, with nvidia-ml-py and a GPU) into the run.

    Every ``$LOOKRIGHT_SYSTEM_METRICS_S`` seconds (default 10, 0 = off) as ``system/*``
    metrics, through MLflow's own monitor; one more sample at the end, so that a job shorter
    than the interval is sampled too (the monitor itself logs only whole intervals).
    """
    interval = float(os.environ.get(SYSTEM_METRICS_ENV, DEFAULT_SYSTEM_METRICS_S))
    if interval <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id,
        sampling_interval=interval,
        resume_logging=run.resumed,
        tracking_uri=run.tracking_uri,
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception:  # never fail a stage for its system metrics
            _log.warning("could not log the final system metrics of run %s", run.run_id)


def _start(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, str],
) -> StageRun:
    uri = client.tracking_uri
    created = _retry(
        lambda: client.create_run(experiment_id, tags=tags, run_name=name), uri, "create a run"
    )
    run = StageRun(client, created.info.run_id)
    run.log_params(params)
    return run


def _resume(
    client: MlflowClient, run_id: str, tags: dict[str, str], params: dict[str, str]
) -> StageRun:
    """Mark ``run_id`` RUNNING again; log only params it lacks (MLflow forbids changing them)."""
    uri = client.tracking_uri
    old = _retry(lambda: client.get_run(run_id), uri, f"read run {run_id}")
    _retry(lambda: client.update_run(run_id, status="RUNNING"), uri, f"resume run {run_id}")
    changed = sorted(k for k, v in params.items() if old.data.params.get(k, v) != v)
    if changed:
        _log.warning("Resumed run %s keeps its old values of params %s", run_id, changed)
        tags = {k: v for k, v in tags.items() if k != TAG_CONFIG_HASH}  # hash of the old params
    run = StageRun(client, run_id, resumed=True)
    run.set_tags(tags)
    run.log_params({k: v for k, v in params.items() if k not in old.data.params})
    return run


def _end(run: StageRun, status: str) -> None:
    end_time = int(time.time() * 1000)
    run._call(
        f"end run as {status}",
        lambda: run._client.set_terminated(run.run_id, status=status, end_time=end_time),
    )


def _end_quietly(run: StageRun, status: str) -> None:
    """End the run while another exception propagates; never mask that exception."""
    try:
        _end(run, status)
    except Exception:
        _log.exception("Could not mark MLflow run %s as %s", run.run_id, status)


# --------------------------------------------------------------------------- queries


def _quote(value: str) -> str | None:
    """Value as a search-filter literal, or None when it cannot be quoted safely."""
    return None if "'" in value or "\\" in value else f"'{value}'"


def _tag_filter(tags: Mapping[str, str]) -> str:
    clauses = []
    for key, value in tags.items():
        literal = _quote(value)
        if literal is not None and "`" not in key:
            clauses.append(f"tags.`{key}` = {literal}")
    return " AND ".join(clauses)


def find_runs(
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    stage: str | None = None,
    filter_tags: Mapping[str, str] | None = None,
) -> list[Run]:
    """Active runs of ``experiment`` matching ``stage`` and all ``filter_tags``, newest first.

    Like every entry point, it first runs :func:`init_store` (an empty store has no runs).
    """
    wanted = {str(k): str(v) for k, v in (filter_tags or {}).items()}
    if stage is not None:
        wanted[TAG_STAGE] = stage
    experiment_id = init_store(tracking_uri, experiment)
    client = _client(tracking_uri)
    runs = _retry(
        lambda: _search_all(client, experiment_id, _tag_filter(wanted)), tracking_uri, "search runs"
    )
    return [r for r in runs if all(r.data.tags.get(k) == v for k, v in wanted.items())]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_resumable_run(
    tracking_uri: str,
    stage: str,
    key_tag_value: str,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    config_hash: str | None = None,
) -> Run | None:
    """The latest run of ``stage`` tagged ``lookright.run_key == key_tag_value``, if unfinished.

    Returns None when there is no such run or the latest one is FINISHED (the stage completed,
    a re-run starts afresh). With ``config_hash``, only runs of that exact config count.
    """
    wanted = {TAG_RUN_KEY: key_tag_value}
    if config_hash is not None:
        wanted[TAG_CONFIG_HASH] = config_hash
    runs = find_runs(tracking_uri, experiment, stage=stage, filter_tags=wanted)
    if not runs:
        return None
    latest = max(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return None if latest.info.status == _DONE else latest


# --------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``lookright tracking-init``."""
    parser.add_argument("--results-dir", default=Path("results"), type=Path)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument(
        "--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    )
    return parser


def cli_main(args: argparse.Namespace) -> int:
    """``lookright tracking-init``: create/migrate the store once (the Snakefile's onstart)."""
    uri = resolve_tracking_uri(args.tracking_uri, args.results_dir)
    init_store(uri, args.experiment)
    print(f"MLflow store ready: {uri} (experiment {args.experiment!r})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lookright.tracking init --results results/``: create the store once."""
    parser = argparse.ArgumentParser(prog="python -m lookright.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create and migrate the tracking store")
    init.add_argument("--results", default="results", help="results folder of the default store")
    init.add_argument("--uri", default=None, help="tracking URI (overrides the default store)")
    init.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.uri, args.results)
    experiment_id = init_store(uri, args.experiment)
    print(f"{uri} experiment={args.experiment} id={experiment_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
