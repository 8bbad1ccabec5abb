"""The service in several replicas on Ray Serve: the same app (`create_app`: its routes, schemas and
OpenAPI schema) in each replica, behind Ray Serve's HTTP proxies, which spread requests over them.

    relkit serve -w /shared/ws --ray --replicas 2                        # a local Ray, started here
    relkit serve -w /shared/ws --ray --ray-address auto --replicas 4 --host 0.0.0.0 --api-key "$KEY"

Each replica is a Ray actor that reads the workspace from its path, as `relkit serve` does: the
database (read-only, at start and when a promoted student needs other features), the student's
folder and the query encoder's ONNX export under `artifacts/`, and the `active-student` file, which
every replica polls, so `relkit promote` reaches all of them. On a cluster of several machines the
workspace must therefore be at the same path on every node (shared storage; read access is enough):
a replica that cannot read it fails at start, saying which node and which file. Each response names
the replica that answered and its Ray node in the `x-relkit-replica` and `x-relkit-node` headers.

    from relkit.serve.replicas import deploy
    ray.init(address="auto")
    url = deploy("/shared/ws", replicas=2)      # -> "http://127.0.0.1:8000"
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

from relkit.errors import RelkitError
from relkit.net import is_loopback
from relkit.serve.schemas import Limits
from relkit.serve.state import WARM_QUERIES
from relkit.workspace import ACTIVE_FILE, DB_NAME, active_student

APP_NAME = "relkit"                 # the Ray Serve application (and deployment) name
REPLICA_HEADER = "x-relkit-replica"  # the replica that answered (Ray Serve's replica id)
NODE_HEADER = "x-relkit-node"        # the Ray node it runs on
INSTALL_HINT = "the service on Ray needs Ray Serve: pip install 'relkit[ray]' (ray[serve]==2.60.0)"
logger = logging.getLogger(__name__)


def check_workspace(workspace: str | os.PathLike, where: str = "this machine") -> dict:
    """The active-student record of `workspace`, once everything a replica reads from it is readable
    (the database, the `active-student` file, the student's folder); a RelkitError naming `where`
    and the first file that is not, otherwise.

    >>> check_workspace("/no/such/workspace")
    Traceback (most recent call last):
    ...
    relkit.errors.RelkitError: on this machine, the workspace /no/such/workspace is not readable (/no/such/workspace is not a readable directory); every Ray node that runs a replica needs the workspace at this same path (shared storage, read-only is enough)
    """
    path = Path(workspace)

    def unreadable(what: str) -> RelkitError:
        return RelkitError(f"on {where}, the workspace {path} is not readable ({what}); every Ray node that runs a "
                           "replica needs the workspace at this same path (shared storage, read-only is enough)")

    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise unreadable(f"{path} is not a readable directory")
    db = path / DB_NAME
    if not db.is_file() or not os.access(db, os.R_OK):
        raise unreadable(f"{db} is missing or not readable")
    record = active_student(path)
    if record is None:
        if (path / ACTIVE_FILE).exists():
            raise unreadable(f"{path / ACTIVE_FILE} is not a readable active-student record")
        raise RelkitError(f"no student is active in {path}: run `relkit promote NAME` first")
    # the record's absolute path is the promoting machine's; the service falls back to artifacts/
    student = Path(record["path"]) if Path(record["path"]).is_dir() else path / "artifacts" / record["student"]
    if not student.is_dir() or not os.access(student, os.R_OK | os.X_OK):
        raise unreadable(f"the active student's folder {student} is missing or not readable")
    return record


class ReplicaHeaders:
    """ASGI middleware: every HTTP response carries the replica's id and its node's."""

    def __init__(self, app, replica: str, node: str):
        self.app = app
        self.headers = [(REPLICA_HEADER.encode(), replica.encode("latin-1")), (NODE_HEADER.encode(), node.encode("latin-1"))]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)
        return await self.app(scope, receive, named)


class Replica:
    """One replica of the service (a Ray Serve deployment through `deployment()`): checks that this
    node can read the workspace, then builds the app with `create_app`; Ray Serve runs the app's
    lifespan, which loads the active student and follows promotions, as in `relkit serve`."""

    def __init__(self, workspace: str, limits: Limits | None = None, api_key: str | None = None,
                 poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES, log_level: int = logging.INFO):
        import ray
        from ray import serve

        _log_to_stderr(log_level)
        self.node = ray.get_runtime_context().get_node_id()
        self.replica = serve.get_replica_context().replica_id.unique_id
        check_workspace(workspace, where=f"Ray node {self.node} ({socket.gethostname()})")
        self.workspace, self.limits, self.api_key = workspace, limits, api_key
        self.poll_seconds, self.warm_queries = poll_seconds, warm_queries

    def __serve_build_asgi_app__(self):   # Ray Serve calls it after __init__: the app to run
        from relkit.serve.app import create_app

        app = create_app(self.workspace, self.limits, self.api_key, self.poll_seconds, self.warm_queries)
        app.add_middleware(ReplicaHeaders, replica=self.replica, node=self.node)
        return app


def _log_to_stderr(level: int) -> None:
    """relkit's messages in a replica (`now serving ...`) go to its stderr, which Ray keeps in the
    replica's log file (and shows on the driver unless told otherwise)."""
    ours = logging.getLogger("relkit")
    ours.setLevel(level)
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)


def deployment(replicas: int = 1, max_replicas: int | None = None, max_replicas_per_node: int | None = None):
    """The Ray Serve deployment of `Replica`: `replicas` of it, or between `replicas` and `max_replicas`
    as Ray Serve's autoscaler decides from the requests in flight (`max_replicas` over `replicas`)."""
    serve = _ray_serve()
    _check_replicas(replicas, max_replicas)
    scaling = ({"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas}}
               if max_replicas is not None and max_replicas > replicas else {"num_replicas": replicas})
    placement = {} if max_replicas_per_node is None else {"max_replicas_per_node": max_replicas_per_node}
    # a replica that cannot read the workspace will not on a retry either: fail the deployment soon
    return serve.deployment(serve.ingress()(Replica), name=APP_NAME, max_constructor_retry_count=3,
                            ray_actor_options={"num_cpus": 1}, **scaling, **placement)


def deploy(workspace: str | os.PathLike, replicas: int = 1, max_replicas: int | None = None,
           host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, limits: Limits | None = None,
           poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES, max_replicas_per_node: int | None = None,
           proxy_location: str = "EveryNode") -> str:
    """Run the service on the Ray cluster this process is connected to (`ray.init` first) and return
    its URL once every replica answers. `proxy_location`: Ray Serve's, "EveryNode" (an HTTP proxy on
    each node with a replica, on `host:port`, for a load balancer in front) or "HeadOnly"."""
    serve = _ray_serve()
    workspace = Path(workspace).resolve()
    _check_start(workspace, host, api_key, replicas, max_replicas)
    serve.start(proxy_location=proxy_location, http_options={"host": host, "port": port})
    _check_http(host, port)
    target = deployment(replicas, max_replicas, max_replicas_per_node).bind(
        str(workspace), limits, api_key, poll_seconds, warm_queries, logging.getLogger("relkit").getEffectiveLevel())
    try:
        # no access log, as `relkit serve` (uvicorn's is off there): /metrics counts the requests
        serve.run(target, name=APP_NAME, route_prefix="/", logging_config={"enable_access_log": False})
    except RuntimeError as e:   # "Deploying application relkit failed": why is in the deployment's status
        why = _why_not_started(serve, e)
        serve.delete(APP_NAME)
        raise RelkitError(f"the service did not start on Ray: {why}") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def serve_on_ray(workspace: str | os.PathLike, address: str | None = None, replicas: int = 1,
                 max_replicas: int | None = None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 limits: Limits | None = None, poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES) -> None:
    """Run the service on Ray (the cluster at `address`, else a local Ray started here) until
    interrupted; then the application is deleted, and a Ray started here stopped."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise RelkitError(INSTALL_HINT) from None
    _check_start(Path(workspace).resolve(), host, api_key, replicas, max_replicas)   # before Ray starts
    started_here = not ray.is_initialized()
    if started_here:
        try:
            address = address or os.environ.get("RAY_ADDRESS")
            # a Ray of its own unless told which to join ("auto": the one `ray start` began here), with
            # a CPU for each replica however many cores (a replica holds one)
            ray.init(address=address or "local", include_dashboard=False,
                     **({} if address else {"num_cpus": max(max_replicas or replicas, os.cpu_count() or 1)}))
        except ConnectionError as e:
            raise RelkitError(f"no Ray cluster at {address}: {e}") from None
    # a process manager's stop, as Ctrl-C, from before the deployment starts (which may take minutes):
    # an interrupted start deletes what it deployed, on a cluster relkit did not start too
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            url = deploy(workspace, replicas, max_replicas, host, port, api_key, limits, poll_seconds, warm_queries)
            scaling = f"{replicas} to {max_replicas}" if max_replicas and max_replicas > replicas else str(replicas)
            logger.info("relkit: serving %s on %s with %s replicas on Ray (docs at /docs); Ctrl-C stops it",
                        workspace, url, scaling)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            from ray.serve.context import _get_global_client

            if _get_global_client(raise_if_no_controller_running=False) is not None:   # Serve had started
                serve.delete(APP_NAME)
    finally:
        if started_here:
            serve.shutdown()
            ray.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _check_http(host: str, port: int) -> None:
    """Ray Serve sets its proxies' address once per cluster (the first start): refuse another."""
    from ray.serve.context import (
        _get_global_client,  # the client of the serve.start just called
    )

    config = _get_global_client().http_config
    if (config.host, config.port) != (host, port):
        raise RelkitError(f"Ray Serve already runs on this cluster with its HTTP proxies on {config.host}:"
                          f"{config.port}, which it keeps until it is shut down (`serve shutdown`): serve on "
                          f"--host {config.host} --port {config.port}")


def _why_not_started(serve, error: Exception) -> str:
    """The last line of the replicas' error (a RelkitError's message, as a rule), else `error`'s."""
    try:
        status = serve.status().applications[APP_NAME]
        messages = [d.message for d in status.deployments.values() if d.message] or [status.message]
    except Exception:  # the status itself is out of reach: say what serve.run said
        return str(error)
    lines = [line.strip() for message in messages for line in message.splitlines() if line.strip()]
    if not lines:
        return str(error)
    return lines[-1].removeprefix("relkit.errors.RelkitError: ")


def _check_start(workspace: Path, host: str, api_key: str | None, replicas: int, max_replicas: int | None) -> None:
    if not is_loopback(host) and not api_key:
        raise RelkitError(f"binding to {host} exposes the service beyond this machine: set an API key "
                          "(--api-key or RELKIT_API_KEY)")
    _check_replicas(replicas, max_replicas)
    check_workspace(workspace)


def _check_replicas(replicas: int, max_replicas: int | None) -> None:
    if replicas < 1 or (max_replicas is not None and max_replicas < replicas):
        raise RelkitError(f"--replicas must be at least 1 and --max-replicas at least --replicas "
                          f"(got --replicas {replicas}, --max-replicas {max_replicas})")


def _ray_serve():
    try:
        from ray import serve
    except ImportError:
        raise RelkitError(INSTALL_HINT) from None
    return serve
