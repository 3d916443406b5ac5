"""The README's example app: ``longjobs serve examples.docs:app``.

Two job kinds that run offline, with no API key, and give the same answer every time:

- ``analyze_document`` (async): word and sentence counts, reading time, keywords (TF-IDF over
  chunks) and an extractive summary, with progress per chunk, a checkpoint after each chunk (a
  retried attempt resumes where the last one stopped) and the summary streamed as partial output.
  With ``OPENAI_API_KEY`` or an upstream base URL set, an OpenAI-compatible model writes the
  summary instead (see ``examples.upstream``).
- ``classify_batch`` (sync, so it runs in a thread): labels short support messages with a small
  naive Bayes classifier, with progress per message; it polls ``ctx.cancelled`` to stop early.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from examples.classifier import UNKNOWN, support_classifier
from examples.text_analysis import (
    ChunkStats,
    analyze_chunk,
    chunk_text,
    keyword_weights,
    reading_minutes,
    split_sentences,
    summarize,
    top_keywords,
)
from examples.upstream import Upstream, stream_chat, summary_prompt
from longjobs import App, Context

app = App()

OFFLINE_MODEL = "extractive-tfidf-v1"
KEYWORDS = 10
ANALYSIS_SHARE = 0.9
"""The part of the progress bar that analysing chunks fills; summarizing fills the rest."""


class DocumentIn(BaseModel):
    """A document to analyse."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1_000_000,
            description="the document; over HTTP the whole request must also fit "
            "LONGJOBS_MAX_BODY_BYTES (1 MiB by default)",
        ),
    ]
    title: str | None = None
    chunk_size: Annotated[int, Field(ge=100, le=20_000, description="characters per chunk")] = 2000
    summary_sentences: Annotated[int, Field(ge=1, le=50)] = 5
    pace_seconds: Annotated[
        float, Field(ge=0.0, le=5.0, description="pause per chunk, to watch progress in a demo")
    ] = 0.0


class SummaryOut(BaseModel):
    """What ``analyze_document`` found."""

    title: str | None
    words: int
    sentences: int
    chunks: int
    reading_minutes: float
    keywords: list[str]
    summary: list[str]
    model: str


@app.job
async def analyze_document(ctx: Context, doc: DocumentIn) -> SummaryOut:
    """Count, find keywords and summarize a document, chunk by chunk, resumably."""
    await ctx.progress(0.0, stage="chunking", message="splitting sentences")
    # Passes over the whole text run in a thread: the event loop also serves the worker's
    # heartbeats (and, under `longjobs serve`, the API), and a 5 MB text takes a while.
    sentences = await asyncio.to_thread(split_sentences, doc.text)
    chunks = await asyncio.to_thread(chunk_text, sentences, doc.chunk_size)
    stats = await _analyze_chunks(ctx, chunks, doc.pace_seconds)
    weights = keyword_weights(stats)
    keywords = top_keywords(weights, KEYWORDS)
    await ctx.progress(ANALYSIS_SHARE, stage="summarizing", message="picking sentences")
    upstream = Upstream.from_env()
    if upstream is None:
        picked = await asyncio.to_thread(summarize, sentences, weights, doc.summary_sentences)
        for sentence in picked:
            await ctx.output(delta=sentence + "\n")
        summary, model = picked, OFFLINE_MODEL
    else:
        count = 3 * doc.summary_sentences  # the model gets the best candidates, not all the text
        candidates = await asyncio.to_thread(summarize, sentences, weights, count)
        prompt = summary_prompt(doc.title, keywords, candidates, doc.summary_sentences)
        summary, model = split_sentences(await stream_chat(ctx, upstream, prompt)), upstream.model
    word_count = sum(chunk["words"] for chunk in stats)
    await ctx.progress(1.0, stage="done", message=f"{word_count} words, {len(chunks)} chunks")
    return SummaryOut(
        title=doc.title,
        words=word_count,
        sentences=len(sentences),
        chunks=len(chunks),
        reading_minutes=reading_minutes(word_count),
        keywords=keywords,
        summary=summary,
        model=model,
    )


async def _analyze_chunks(ctx: Context, chunks: list[str], pace_seconds: float) -> list[ChunkStats]:
    total = len(chunks)
    stats = resume_point(ctx.checkpoint_state, total)
    if stats:
        await ctx.log(f"resuming at chunk {len(stats) + 1} of {total}")
    for number in range(len(stats) + 1, total + 1):
        stop_if_cancelled(ctx)
        await asyncio.sleep(pace_seconds)  # stands in for a model call per chunk; yields anyway
        stats.append(analyze_chunk(chunks[number - 1]))
        message = f"chunk {number} of {total}"
        fraction = round(ANALYSIS_SHARE * number / total, 4)
        await ctx.progress(fraction, stage="analyzing", message=message)
        # A fresh list each time: the worker serializes the checkpoint later, in its own time.
        await ctx.checkpoint({"chunks": total, "next_chunk": number, "partial": list(stats)})
    return stats


_PARTIAL: TypeAdapter[list[ChunkStats]] = TypeAdapter(list[ChunkStats])


def resume_point(state: Any, chunks: int) -> list[ChunkStats]:
    """The chunk statistics a previous attempt saved, or [] to start over.

    A checkpoint that does not fit this document (another chunk count, a damaged state) is
    ignored rather than trusted.
    """
    if not isinstance(state, dict) or state.get("chunks") != chunks:
        return []
    try:
        partial = _PARTIAL.validate_python(state.get("partial"))
    except ValidationError:
        return []
    return partial if state.get("next_chunk") == len(partial) <= chunks else []


def stop_if_cancelled(ctx: Context) -> None:
    """Stop the handler once cancellation (or the deadline) is signalled.

    The worker cancels an async handler's task anyway; checking between steps stops it at a
    clean point, and it is the only way a sync handler, running in a thread, can stop early.
    """
    if ctx.cancelled:
        raise asyncio.CancelledError(ctx.cancel_reason or "cancelled")


class BatchIn(BaseModel):
    """Short texts to label."""

    model_config = ConfigDict(extra="forbid")

    texts: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=10_000)]],
        Field(min_length=1, max_length=10_000),
    ]
    pace_seconds: Annotated[float, Field(ge=0.0, le=1.0, description="pause per text")] = 0.0


class Label(BaseModel):
    """One text's label and the classifier's confidence in it."""

    label: str
    confidence: float


class BatchOut(BaseModel):
    """The labels, in input order, and how many texts got each label."""

    labels: list[Label]
    counts: dict[str, int]
    model: str


@app.job
def classify_batch(ctx: Context, batch: BatchIn) -> BatchOut:
    """Label short support messages: account, billing, feedback or technical."""
    classifier = support_classifier()
    labels: list[Label] = []
    total = len(batch.texts)
    for number, text in enumerate(batch.texts, start=1):
        stop_if_cancelled(ctx)
        _pause(ctx, batch.pace_seconds)
        prediction = classifier.predict(text)
        labels.append(Label(label=prediction.label, confidence=prediction.confidence))
        ctx.progress(number / total, stage="classifying", message=f"text {number} of {total}")
    counts = dict.fromkeys([*classifier.labels, UNKNOWN], 0)
    for item in labels:
        counts[item.label] += 1
    return BatchOut(labels=labels, counts=counts, model="naive-bayes-v1")


def _pause(ctx: Context, seconds: float) -> None:
    # Short sleeps, so a cancelled sync handler notices within 50 ms.
    deadline = time.monotonic() + seconds
    while not ctx.cancelled and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


@cache
def sample_document() -> str:
    """A short report (about 800 words) to try the app with: the text of
    ``examples/sample_input.json``, the README's input for ``analyze_document``."""
    sample = json.loads(Path(__file__).with_name("sample_input.json").read_text(encoding="utf-8"))
    text: str = sample["text"]
    return text
