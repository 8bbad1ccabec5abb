"""The LLM judge command: judge (and --probe: how a judge's levels move under tampering)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _given, _open, app, console
from relkit.errors import RelkitError


@app.command()
def judge(
    name: Annotated[str, typer.Option(
        help="The judge: stored as artifacts/judge-NAME, its labels as judge:NAME. With --probe also teacher:NAME or "
             "student:NAME.")],
    model: Annotated[str | None, typer.Option(
        help="The LLM: the endpoint's model name, or (local) a causal LM folder, hub id or 'smollm2'. Omit to run "
             "the stored judge NAME again.")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible base URL (vLLM, llama.cpp server, Ollama, OpenAI), e.g. http://host:8080/v1; "
             "omit for a local transformers model.")] = None,
    key_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the endpoint's API key (never stored).")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="Local: a GGUF file inside the --model folder.")] = None,
    prompt: Annotated[Path | None, typer.Option(
        help="A prompt template file with ${rubric} ${guidelines} ${examples} ${k} ${query} ${item} "
             "(default: relkit's, copied to artifacts/judge-NAME/prompt.txt).")] = None,
    guidelines: Annotated[Path | None, typer.Option(help="A text file saying what each level means.")] = None,
    shots: Annotated[int | None, typer.Option(min=0, help="Few-shot examples drawn from the train judgments.")] = None,
    fields: Annotated[str | None, typer.Option(
        help="Item text fields as name[:max_words],... (as `relkit teach --fields`; default all).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Judge the judged pairs of this split (train, dev, test: agreement with people) instead of the pairs "
             "table.")] = None,
    file: Annotated[Path | None, typer.Option(
        help="Judge the pairs of this file (CSV, JSONL or Parquet with query_id and item_id columns).")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Endpoint: requests in flight.")] = None,
    rpm: Annotated[float | None, typer.Option(min=0, help="Endpoint: requests per minute at most (0: no cap).")]
        = None,
    retries: Annotated[int | None, typer.Option(min=0, help="Endpoint: tries again on 429, 5xx and timeouts.")] \
        = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="Endpoint: seconds per request.")] = None,
    logprobs: Annotated[bool | None, typer.Option(
        help="Endpoint: ask for the answer token's log-probabilities (a distribution, not one level).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Local: prompts per forward pass.")] = None,
    shard_size: Annotated[int | None, typer.Option(min=1, help="Labels per Parquet shard (kept as they arrive).")]
        = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Probe the stored judge NAME (or teacher:NAME, student:NAME): how often its level moves under "
                        "keyword stuffing, an injected instruction and (LLM judges) a reworded prompt.")] = False,
    sample: Annotated[int | None, typer.Option(
        min=1, help="With --probe: judged pairs drawn per probe (default 50).")] = None,
    seed: Annotated[int | None, typer.Option(help="With --probe: the seed of the draw of probed pairs (default 0).")] \
        = None,
    json_: Annotated[bool, typer.Option("--json", help="With --probe: print the probes as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """An LLM puts pairs on the workspace's scale; labels are cached, resumable and usable as a teacher's (judge:NAME)."""
    from relkit.judge import JudgeSpec, create_judge, load_judge, select_pairs  # lazy: duckdb

    if probe:
        given = [flag for flag, value in (
            ("--model", model), ("--endpoint", endpoint), ("--key-env", key_env), ("--gguf-file", gguf_file),
            ("--prompt", prompt), ("--guidelines", guidelines), ("--shots", shots), ("--fields", fields),
            ("--file", file), ("--concurrency", concurrency), ("--rpm", rpm), ("--retries", retries),
            ("--timeout", timeout), ("--logprobs", logprobs), ("--batch-size", batch_size),
            ("--shard-size", shard_size)) if value is not None]
        if given:
            raise RelkitError(f"--probe probes a stored judge, as it was made, on judged pairs; it takes no "
                              f"{', '.join(given)}")
        _probe(name, split, 50 if sample is None else sample, 0 if seed is None else seed, json_, workspace)
        return
    given = [flag for flag, value in (("--json", json_ or None), ("--sample", sample), ("--seed", seed))
             if value is not None]
    if given:
        raise RelkitError(f"{', '.join(given)} go with --probe")
    with _open(workspace) as ws:
        if model is None:
            given = [flag for flag, value in (("--endpoint", endpoint), ("--gguf-file", gguf_file), ("--prompt", prompt),
                                              ("--guidelines", guidelines), ("--fields", fields)) if value]
            if given or shots:
                raise RelkitError(f"{', '.join(given + (['--shots'] if shots else []))} make a new judge: give --model "
                                  f"too (and another --name), or run the stored judge '{name}' with --name alone")
            judge = load_judge(ws, name)
        else:
            spec = JudgeSpec(name=name, model=model, backend="endpoint" if endpoint else "local", endpoint=endpoint,
                             gguf_file=gguf_file, fields=fields or "", **_given(
                                 key_env=key_env, concurrency=concurrency, rpm=rpm, retries=retries, timeout=timeout,
                                 logprobs=logprobs, batch_size=batch_size, shots=shots))
            judge = create_judge(ws, spec, prompt, guidelines)
        pairs = select_pairs(ws, split, file)
        result = judge.run(ws, pairs, **_given(shard_size=shard_size))
    console.print(result.summary(), highlight=False)


def _probe(name: str, split: str | None, sample: int, seed: int, json_: bool, workspace: Path) -> None:
    from relkit.audit import JUDGES, make_judge  # lazy: duckdb, numpy
    from relkit.audit.probes import probe

    spec = name if name.partition(":")[0] in JUDGES else f"judge:{name}"   # a plain NAME is the LLM judge
    with _open(workspace) as ws:
        report = probe(ws, make_judge(spec, ws), sample=sample, seed=seed, split=split)
    if json_:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report)
