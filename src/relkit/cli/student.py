"""Commands that make and serve the student: distill, promote, serve."""
from __future__ import annotations

import json
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _csv_ints, _given, _open, app, console
from relkit.config import collect
from relkit.errors import RelkitError


@app.command()
def distill(
    teacher: Annotated[str | None, typer.Option(
        help="Train on this teacher's labels (NAME as in `relkit label`) or a judge's (judge:NAME); omit for "
             "human labels only.")] = None,
    name: Annotated[str | None, typer.Option(help="Student name (artifacts/student-NAME); default: the teacher's.")]
        = None,
    sizes: Annotated[str | None, typer.Option(
        help="Scaling curve: students on these numbers of teacher-labeled pairs, e.g. 1000,5000,all, next to "
             "one on human labels only; each scored on the test split.")] = None,
    human_weight: Annotated[float | None, typer.Option(
        help="Weight of a human-labeled train pair against a teacher-labeled one (0: teacher labels only).")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden layer sizes.")] = None,
    groups: Annotated[str | None, typer.Option(
        help="Feature groups, of embedding, bm25, text_match, engagement, graph (item embeddings from "
             "co-engagement: needs an engagement log with clicks), visual (item image embeddings).")] = None,
    encoder: Annotated[str | None, typer.Option(
        help="Bi-encoder for the embedding features (default: the workspace's, `relkit init --encoder`; "
             "another is refused).")] = None,
    graph_dim: Annotated[int | None, typer.Option(min=1, help="Width of the item graph embedding (graph group).")]
        = None,
    image_encoder: Annotated[str | None, typer.Option(
        help="Image encoder for the visual group: any transformers vision model, path or hub id.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Training setting KEY=VALUE (epochs, patience, batch_size, lr, weight_decay, dropout, seed, "
                      "product_rank: rank of the query-item-product weights, 0 for full).")]
        = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Distill the teacher's labels into a small, fast student (an MLP over cheap features)."""
    from relkit.student.distill import Distiller, parse_sizes, scaling_curve  # lazy: duckdb, scikit-learn
    from relkit.student.features import FeatureConfig
    from relkit.student.model import StudentConfig

    config = StudentConfig(**collect(StudentConfig, sets=set_, flags={   # flags win over --set
        "hidden": None if hidden is None else tuple(_csv_ints(hidden, "--hidden")), "human_weight": human_weight}))
    features = FeatureConfig(**_given(
        encoder=encoder, groups=None if groups is None else tuple(g.strip() for g in groups.split(",") if g.strip()),
        graph_dim=graph_dim, image_encoder=image_encoder))
    plan = parse_sizes(sizes) if sizes else None
    if teacher is None and plan:
        raise RelkitError("--sizes counts teacher-labeled pairs: name a --teacher")
    with _open(workspace) as ws:
        distiller = Distiller(ws, teacher, features)
        name = name or (distiller.teacher or "human").replace(":", "-")   # judge:smol -> student-judge-smol
        if plan:
            curve = scaling_curve(distiller, plan, config, prefix=name)
            if json_:
                typer.echo(json.dumps(curve.to_dicts(), indent=2))
                return
            console.print(curve)
            console.print(f"saved as artifacts/student-{name}-<size>", highlight=False)
            return
        student = distiller.train(None if teacher else 0, config, human=teacher is None or config.human_weight > 0)
        student.save(ws.artifacts / f"student-{name}")
    if json_:
        typer.echo(json.dumps(student.to_dict(), indent=2))
    else:
        console.print(student.summary(), highlight=False)


@app.command()
def promote(
    student: Annotated[str, typer.Argument(help="The student: NAME (artifacts/student-NAME), a folder name or a path.")],
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Make a student the one `relkit serve` serves (its query encoder exported to ONNX first); a running service
    switches to it without dropping requests."""
    from relkit.promotion import promote as make_active  # lazy: duckdb

    with _open(workspace) as ws:
        name = make_active(ws, student)
    console.print(f"{name} is now the active student of {workspace}", highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind; beyond loopback an API key is required.")]
        = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RELKIT_API_KEY",
                                                help="Require this X-API-Key header on /v1/ requests.")] = None,
    max_candidates: Annotated[int | None, typer.Option(min=1, help="Items per rerank request.")] = None,
    max_body_mb: Annotated[float | None, typer.Option(
        min=0.001, help="Largest request body, in MB (1,000,000 bytes); larger gets 413.")] = None,
    poll_seconds: Annotated[float | None, typer.Option(min=0.05, help="How often to look for a promoted student.")]
        = None,
    warm_queries: Annotated[int | None, typer.Option(
        min=0, help="Encode this many of the workspace's known queries (most engaged, then most paired) "
                    "as soon as the service answers, so a restart does not stay with an empty query cache; "
                    "0: none.")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run replicas of the service on Ray Serve, behind its HTTP proxies; every Ray node needs "
                      "the workspace at the same path (see the docs: Replicas with Ray Serve).")] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="With --ray: a Ray cluster to join, or auto for the one `ray start` began here (default: "
             "$RAY_ADDRESS, else a local Ray started for the service).")] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="With --ray: replicas of the service.")] = None,
    max_replicas: Annotated[int | None, typer.Option(
        min=1, help="With --ray: let Ray Serve scale between --replicas and this many by the requests in flight.")]
        = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Serve the active student over HTTP: POST /v1/rerank, POST /v1/search, /healthz, /metrics, /docs."""
    from relkit.serve import Limits  # lazy: fastapi
    from relkit.serve import serve as run_service
    from relkit.student.snapshot import check_workspace

    if not ray and (ray_address is not None or replicas is not None or max_replicas is not None):
        raise RelkitError("--ray-address, --replicas and --max-replicas go with --ray")
    check_workspace(workspace)   # a missing or foreign workspace: its error, now (read apart: no DuckDB here)
    limits = Limits(**_given(max_candidates=max_candidates,   # MB as in caption
                             max_body_bytes=None if max_body_mb is None else int(max_body_mb * 1e6)))
    options = _given(host=host, port=port, poll_seconds=poll_seconds, warm_queries=warm_queries)
    if ray:
        from relkit.serve.replicas import serve_on_ray  # lazy: ray, when it runs

        serve_on_ray(workspace, address=ray_address, max_replicas=max_replicas, api_key=api_key, limits=limits,
                     **_given(replicas=replicas), **options)
    else:
        run_service(workspace, api_key=api_key, limits=limits, **options)
