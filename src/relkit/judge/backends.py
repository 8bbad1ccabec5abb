"""Where a judge's answers come from: an OpenAI-compatible chat endpoint, or a local causal LM.

Both take prompts and yield `Answer`s (in any order, each with its prompt's index) as they are
done, so the caller can keep what is paid for even when a later request fails.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError
from relkit.judge.prompt import level_distribution, one_hot, parse_answer
from relkit.scale import LabelScale

logger = logging.getLogger(__name__)
SOURCES = ("logprobs", "parsed", "unparsed", "logits")


@dataclass(frozen=True)
class Answer:
    index: int                  # of the prompt
    proba: np.ndarray | None    # (K,) or None when the answer named no level
    source: str                 # logprobs | parsed | unparsed | logits
    text: str                   # the answer as given ("" for the local backend)
    prompt_tokens: int
    completion_tokens: int
    retries: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source is one of {SOURCES}")
        if (self.proba is None) != (self.source == "unparsed"):
            raise ValueError("an unparsed answer has no distribution, every other one has")


class RateLimiter:
    """At most `per_minute` starts a minute, evenly spaced (0: no cap)."""

    def __init__(self, per_minute: float):
        self.gap = 60.0 / per_minute if per_minute else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.gap:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.gap
        time.sleep(max(0.0, start - now))


@dataclass
class EndpointBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenAI) through the
    official `openai` client. The key is read from the environment variable `key_env` when the
    backend is built and never kept anywhere else."""

    endpoint: str
    model: str
    scale: LabelScale
    key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    rpm: float = 0.0                # requests per minute, 0 = no cap
    retries: int = 5                # per request, on 429, 5xx, timeouts and dropped connections
    timeout: float = 60.0
    max_tokens: int = 8
    logprobs: bool = True
    backoff: float = 1.0            # seconds before the first retry; doubles each time

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.rpm < 0 or self.timeout <= 0 or self.max_tokens < 1:
            raise RelkitError("concurrency and max_tokens must be at least 1; retries and rpm at least 0; "
                              "timeout positive")
        try:
            import openai
        except ImportError:
            raise RelkitError("an endpoint judge needs the openai client: pip install openai==3.57.0") from None
        self._openai = openai
        self._client = openai.OpenAI(base_url=self.endpoint, api_key=os.environ.get(self.key_env) or "none",
                                     timeout=self.timeout, max_retries=0)
        self._limiter = RateLimiter(self.rpm)

    def check(self) -> None:
        """Fail early, in one line, when the endpoint is down, refuses the key or lacks the model."""
        listing = self._call(lambda: self._client.models.list(), missing_ok=True)
        if listing is None:
            return   # a server without /models: the first request will tell
        served = [m.id for m in listing.data]
        if served and self.model not in served:
            raise RelkitError(f"the endpoint {self.endpoint} does not serve the model '{self.model}'; it serves "
                              f"{', '.join(served[:20])}")

    def _call(self, fn, attempts: list | None = None, missing_ok: bool = False):
        """fn() with retries and backoff on what passes (429, 5xx, timeouts, dropped connections);
        what will not pass (a refused key, an unknown model, a bad request) is a RelkitError at once.
        `missing_ok`: a 404 returns None."""
        o = self._openai
        delay = self.backoff
        for attempt in range(self.retries + 1):
            self._limiter.wait()
            try:
                return fn()
            except (o.AuthenticationError, o.PermissionDeniedError) as e:
                raise RelkitError(f"the endpoint {self.endpoint} refused the key (HTTP {e.status_code}); set it in "
                                  f"${self.key_env}") from None
            except o.NotFoundError as e:
                if missing_ok:
                    return None
                raise RelkitError(f"the endpoint {self.endpoint} has no model '{self.model}' or no such route "
                                  f"(HTTP 404: {_message(e)})") from None
            except (o.RateLimitError, o.InternalServerError, o.APITimeoutError, o.APIConnectionError) as e:
                if attempt == self.retries:
                    what = (f"HTTP {e.status_code}" if isinstance(e, o.APIStatusError) else
                            "timed out" if isinstance(e, o.APITimeoutError) else "cannot be reached")
                    raise RelkitError(f"the endpoint {self.endpoint} {what} after {self.retries + 1} tries; "
                                      f"the labels judged so far are kept, run again to go on") from None
                wait_s = delay
                retry_after = getattr(getattr(e, "response", None), "headers", {}).get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait_s = max(wait_s, min(float(retry_after), 60.0))
                logger.info("retrying after %s (%.1f s)", type(e).__name__, wait_s)
                if attempts is not None:
                    attempts.append(1)
                time.sleep(wait_s)
                delay *= 2
            except o.APIStatusError as e:   # another 4xx: the request itself is wrong
                raise RelkitError(f"the endpoint {self.endpoint} rejected the request (HTTP {e.status_code}: "
                                  f"{_message(e)})") from None

    def _ask(self, index: int, prompt: str) -> Answer:
        k = self.scale.k
        # 20 alternatives (OpenAI's most): a level token below the top few still gets its share
        extra = {"logprobs": True, "top_logprobs": 20} if self.logprobs else {}
        retried: list = []
        reply = self._call(lambda: self._client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
            temperature=0.0, **extra), retried)
        choice = reply.choices[0] if reply.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = reply.usage
        tokens = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0)
        proba, source = None, "unparsed"
        content = getattr(getattr(choice, "logprobs", None), "content", None) if choice else None
        for position in content or []:
            if not position.token.strip():
                continue   # leading whitespace: the answer token is the first with text
            if position.token.strip().isdigit():
                top = [(t.token, t.logprob) for t in (position.top_logprobs or [])] or [(position.token,
                                                                                          position.logprob)]
                proba = level_distribution(top, k)
                source = "logprobs" if proba is not None else source
            break
        if proba is None:
            level = parse_answer(text, k, self.scale.names)
            if level is not None:
                proba, source = one_hot(level, k), "parsed"
        return Answer(index, proba, source, text, *tokens, retries=len(retried))

    def answers(self, prompts: list[str]) -> Iterator[Answer]:
        """Every prompt's answer as it arrives, at most `concurrency` requests in flight. An error
        stops the run: requests not yet sent are dropped, answers already yielded stay yielded."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="relkit-judge")
        queue = iter(enumerate(prompts))
        running, failure = set(), None
        try:
            for i, p in queue:
                running.add(pool.submit(self._ask, i, p))
                if len(running) >= self.concurrency:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        failure = failure or error   # send nothing more; keep what is still coming
                        continue
                    yield future.result()
                    nxt = None if failure else next(queue, None)
                    if nxt is not None:
                        running.add(pool.submit(self._ask, *nxt))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            raise failure


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return str(body or e)[:200]


@dataclass
class LocalBackend:
    """Any transformers causal LM, read without generating: the next-token logits of the level
    tokens "1".."K" after the prompt (through the model's chat template when it has one), softmaxed,
    in batches. `model` is a folder or hub id; `gguf_file` a GGUF file in it (dequantized on load)."""

    model: str
    scale: LabelScale
    gguf_file: str | None = None
    batch_size: int = 8
    device: str = "auto"

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from relkit.hf import resolve_device

        if self.batch_size < 1:
            raise RelkitError("batch_size must be at least 1")
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self._tok = AutoTokenizer.from_pretrained(self.model, **extra)
            self._lm = AutoModelForCausalLM.from_pretrained(self.model, **extra)
        except (OSError, ValueError) as e:
            raise RelkitError(f"cannot load the causal LM '{self.model}'"
                              f"{' (' + self.gguf_file + ')' if self.gguf_file else ''}: {e}") from None
        self._device = resolve_device(self.device)
        self._lm.to(self._device).eval()
        self._tok.padding_side = "left"       # the next token of every row is then at the last position
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        ids = []
        for level in self.scale.levels:
            encoded = self._tok.encode(str(level), add_special_tokens=False)
            if len(encoded) != 1:
                raise RelkitError(f"the tokenizer of '{self.model}' splits the level '{level}' into {len(encoded)} "
                                  f"tokens; a local judge reads one token per level")
            ids.append(encoded[0])
        self._level_ids = torch.tensor(ids)

    def check(self) -> None:
        pass

    def _text(self, prompt: str) -> str:
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt + "\nAnswer: "

    def answers(self, prompts: list[str]) -> Iterator[Answer]:
        import torch

        # batches of similar length waste less padding
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self._tok([self._text(prompts[i]) for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=False)
            with torch.inference_mode():
                logits = self._lm(**batch.to(self._device)).logits[:, -1, :].float()
            proba = torch.softmax(logits[:, self._level_ids.to(logits.device)], dim=-1).cpu().numpy()
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, i in enumerate(idx):
                yield Answer(i, proba[row].astype(np.float64), "logits", "", int(lengths[row]), 0)
