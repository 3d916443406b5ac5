"""The README's example app: its text algorithms, its classifier and its handlers run for real."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from examples.classifier import UNKNOWN, NaiveBayes, support_classifier
from examples.docs import (
    OFFLINE_MODEL,
    BatchIn,
    DocumentIn,
    analyze_document,
    app,
    classify_batch,
    resume_point,
    sample_document,
)
from examples.text_analysis import (
    TERMS_PER_CHUNK,
    ChunkStats,
    analyze_chunk,
    chunk_text,
    keyword_weights,
    reading_minutes,
    split_sentences,
    summarize,
    terms,
    top_keywords,
)
from longjobs import InvalidInput, Job, Status
from longjobs.context import Context

SAMPLE_KEYWORDS = [
    "volunteers",
    "trees",
    "water",
    "soil",
    "fruit",
    "orchard",
    "year",
    "mulch",
    "dry",
    "apple",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LONGJOBS_UPSTREAM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def running_job(kind: str, raw_input: Any, checkpoint: Any = None) -> Job:
    return Job(
        id="job_x",
        tenant="default",
        kind=kind,
        status=Status.RUNNING,
        input=raw_input,
        attempt=1 if checkpoint is None else 2,
        checkpoint=checkpoint,
        created_at=datetime.now(UTC),
    )


def events_of(ctx: Context, kind: str) -> list[dict[str, Any]]:
    update = ctx.take_update()
    assert update is not None
    return [data for event_type, data in update.events if event_type == kind]


# -- sentences, chunks, terms ----------------------------------------------------------------


def test_sentences_end_at_punctuation_and_blank_lines() -> None:
    text = 'Rain came late.  The tanks  ran dry!\n\nWater\n\nDid it help? "Yes." It did.'
    assert split_sentences(text) == [
        "Rain came late.",
        "The tanks ran dry!",
        "Water",
        "Did it help?",
        '"Yes."',
        "It did.",
    ]


def test_chunks_pack_whole_sentences_up_to_the_size() -> None:
    sentences = ["Pears ripen late.", "Plums ripen early!", "Apples keep well."]
    assert chunk_text(sentences, 40) == [
        "Pears ripen late. Plums ripen early!",
        "Apples keep well.",
    ]
    assert chunk_text(sentences, 1000) == [" ".join(sentences)]


def test_an_oversized_sentence_is_cut_at_spaces_and_nothing_is_lost() -> None:
    sentence = "one two three four five six seven eight nine ten"
    chunks = chunk_text(["Short one.", sentence], 15)
    assert chunks == ["Short one.", "one two three", "four five six", "seven eight", "nine ten"]
    assert all(len(chunk) <= 15 for chunk in chunks)
    assert chunk_text(["abcdefghij"], 4) == ["abcd", "efgh", "ij"]


def test_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        chunk_text(["a"], 0)


def test_the_sample_document_chunks_fit_and_keep_every_sentence() -> None:
    sentences = split_sentences(sample_document())
    chunks = chunk_text(sentences, 500)
    assert len(sentences) == 47
    assert len(chunks) == 10
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert " ".join(chunks) == " ".join(sentences)


def test_terms_drop_stopwords_numbers_short_words_and_possessives() -> None:
    text = "The orchard's 112 trees, and an old ox: Orchard trees\u2019s well-kept rows."
    assert terms(text) == ["orchard", "trees", "old", "orchard", "trees", "well-kept", "rows"]


# -- keywords, summary, reading time ---------------------------------------------------------


def test_a_chunk_keeps_its_most_frequent_terms_ties_in_alphabetical_order() -> None:
    stats = analyze_chunk("Plums and pears. Pears and apples! Apples, apples.")
    assert stats == {"words": 8, "terms": {"apples": 3, "pears": 2, "plums": 1}}
    many = " ".join(f"term{i:03d}x" for i in range(TERMS_PER_CHUNK + 5))
    kept = analyze_chunk(many)["terms"]
    assert list(kept) == [f"term{i:03d}x" for i in range(TERMS_PER_CHUNK)]


def test_keyword_weights_are_tf_idf_over_chunks() -> None:
    stats: list[ChunkStats] = [
        {"words": 5, "terms": {"apple": 2, "pear": 1}},
        {"words": 4, "terms": {"apple": 1, "plum": 3}},
    ]
    weights = keyword_weights(stats)
    assert weights["apple"] == pytest.approx(3.0)  # in every chunk: idf 1
    assert weights["plum"] == pytest.approx(3 * (math.log(3 / 2) + 1))
    assert weights["pear"] == pytest.approx(math.log(3 / 2) + 1)
    assert top_keywords(weights, 2) == ["plum", "apple"]


def test_the_summary_takes_the_best_sentences_in_their_original_order() -> None:
    sentences = [
        "Pears grow slowly on the old northern wall.",
        "Mulch keeps water in the soil for the young trees.",
        "Heading",
        "The shed roof was painted green again this spring.",
        "Mulch, water and soil matter most here.",  # 12 / sqrt(4) beats 13 / sqrt(6),
    ]
    weights = {"mulch": 5.0, "water": 4.0, "soil": 3.0, "trees": 1.0}
    assert summarize(sentences, weights, 2) == [sentences[1], sentences[4]]
    assert summarize(sentences, weights, 1) == [sentences[4]]
    assert summarize(sentences, weights, 9) == [s for s in sentences if s != "Heading"]


def test_short_sentences_are_used_when_there_is_nothing_else() -> None:
    assert summarize(["Water", "Dry soil"], {"soil": 1.0}, 1) == ["Dry soil"]


def test_the_sample_document_gives_these_keywords_and_summary() -> None:
    sentences = split_sentences(sample_document())
    stats = [analyze_chunk(chunk) for chunk in chunk_text(sentences, 2000)]
    weights = keyword_weights(stats)
    summary = summarize(sentences, weights, 5)
    assert top_keywords(weights, 10) == SAMPLE_KEYWORDS
    assert summary[0].startswith("This report describes the dry year")
    positions = [sentences.index(sentence) for sentence in summary]
    assert positions == sorted(positions)
    assert len(positions) == 5


def test_reading_time_is_238_words_a_minute() -> None:
    assert reading_minutes(821) == 3.4
    assert reading_minutes(0) == 0.0


# -- the classifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I was charged twice for my subscription", "billing"),
        ("The page shows a server error when I upload", "technical"),
        ("Thanks, the new reports look great", "feedback"),
        ("I forgot my password and cannot log in", "account"),
    ],
)
def test_the_classifier_labels_support_messages(text: str, label: str) -> None:
    prediction = support_classifier().predict(text)
    assert prediction.label == label
    assert 0.5 < prediction.confidence <= 1.0


def test_a_text_with_no_known_word_is_unknown() -> None:
    assert support_classifier().predict("zzz qqq").label == UNKNOWN
    assert support_classifier().predict("zzz qqq").confidence == 0.0


def test_naive_bayes_probabilities_and_ties_are_exact() -> None:
    model = NaiveBayes({"fruit": ["apple pear"], "veg": ["leek kale"]})
    # apple: (1+1)/(2+4) for fruit, (0+1)/(2+4) for veg; equal priors → 2/3.
    assert model.predict("apple").confidence == pytest.approx(2 / 3, abs=1e-4)
    assert model.predict("apple").label == "fruit"
    assert model.predict("apple leek").label == "fruit"  # a tie goes to the first label
    assert model.predict("apple leek").confidence == 0.5


# -- the handlers, with a real Context --------------------------------------------------------


def test_both_kinds_are_registered_with_their_schemas() -> None:
    assert set(app.kinds) == {"analyze_document", "classify_batch", "response"}
    assert app.kind("analyze_document").is_async
    assert not app.kind("classify_batch").is_async
    schema = app.kind("analyze_document").input_schema()
    assert schema["properties"]["chunk_size"]["minimum"] == 100


@pytest.mark.parametrize(
    "raw",
    [{"text": ""}, {"text": "x", "chunk_size": 50}, {"text": "x", "colour": "red"}, {}],
)
def test_bad_document_input_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        app.kind("analyze_document").validate_input(raw)


async def test_analyze_document_reports_progress_output_and_checkpoints() -> None:
    doc = DocumentIn(text=sample_document(), title="Orchard", chunk_size=500)
    ctx = Context(running_job("analyze_document", doc.model_dump()))
    result = await analyze_document(ctx, doc)

    assert result.model_dump() | {"summary": None} == {
        "title": "Orchard",
        "words": 821,
        "sentences": 47,
        "chunks": 10,
        "reading_minutes": 3.4,
        "keywords": result.keywords,
        "summary": None,
        "model": OFFLINE_MODEL,
    }
    assert len(result.summary) == 5
    update = ctx.take_update()
    assert update is not None
    assert (update.progress, update.stage, update.message) == (1.0, "done", "821 words, 10 chunks")
    outputs = [data["delta"] for kind, data in update.events if kind == "output"]
    assert "".join(outputs) == "".join(f"{sentence}\n" for sentence in result.summary)
    chunks = chunk_text(split_sentences(doc.text), 500)
    assert update.has_checkpoint
    assert update.checkpoint == {
        "chunks": 10,
        "next_chunk": 10,
        "partial": [analyze_chunk(chunk) for chunk in chunks],
    }


async def test_analyze_document_is_deterministic() -> None:
    doc = DocumentIn(text=sample_document(), chunk_size=700, summary_sentences=3)
    first = await analyze_document(Context(running_job("analyze_document", None)), doc)
    second = await analyze_document(Context(running_job("analyze_document", None)), doc)
    assert first == second
    assert first.keywords[:3] == ["trees", "volunteers", "water"]


async def test_a_retried_attempt_resumes_from_the_checkpoint() -> None:
    doc = DocumentIn(text=sample_document(), chunk_size=2000)
    fresh = await analyze_document(Context(running_job("analyze_document", None)), doc)
    # Chunk 1's saved statistics are made up, so the result shows they were used, not recomputed.
    saved: ChunkStats = {"words": 1000, "terms": {"zucchini": 500}}
    checkpoint = {"chunks": 3, "next_chunk": 1, "partial": [saved]}
    ctx = Context(running_job("analyze_document", None, checkpoint=checkpoint))

    resumed = await analyze_document(ctx, doc)

    first_chunk_words = analyze_chunk(chunk_text(split_sentences(doc.text), 2000)[0])["words"]
    assert resumed.words == fresh.words - first_chunk_words + 1000
    assert resumed.keywords[0] == "zucchini"
    logs = events_of(ctx, "log")
    assert logs == [{"level": "info", "message": "resuming at chunk 2 of 3"}]


def test_a_checkpoint_that_does_not_fit_is_ignored() -> None:
    saved: ChunkStats = {"words": 3, "terms": {"a": 1}}
    assert resume_point({"chunks": 3, "next_chunk": 1, "partial": [saved]}, 3) == [saved]
    assert resume_point({"chunks": 4, "next_chunk": 1, "partial": [saved]}, 3) == []
    assert resume_point({"chunks": 3, "next_chunk": 2, "partial": [saved]}, 3) == []
    assert resume_point({"chunks": 3, "next_chunk": 1, "partial": [{"words": "x"}]}, 3) == []
    assert resume_point(None, 3) == []


async def test_analyze_document_stops_when_cancelled() -> None:
    doc = DocumentIn(text=sample_document(), chunk_size=500)
    ctx = Context(running_job("analyze_document", None))
    ctx.request_stop("cancel requested")
    with pytest.raises(asyncio.CancelledError):
        await analyze_document(ctx, doc)
    update = ctx.take_update()
    assert update is not None
    assert (update.stage, update.has_checkpoint) == ("chunking", False)


async def test_classify_batch_labels_every_text_in_order() -> None:
    texts = ["Refund my annual plan please", "Upload fails with an error", "hmm"]
    ctx = Context(running_job("classify_batch", {"texts": texts}))
    result = await asyncio.to_thread(classify_batch, ctx, BatchIn(texts=texts))
    assert [item.label for item in result.labels] == ["billing", "technical", UNKNOWN]
    assert result.counts == {
        "account": 0,
        "billing": 1,
        "feedback": 0,
        "technical": 1,
        UNKNOWN: 1,
    }
    update = ctx.take_update()
    assert update is not None
    assert (update.progress, update.message) == (1.0, "text 3 of 3")


async def test_the_sync_handler_stops_in_its_thread_when_cancelled() -> None:
    batch = BatchIn(texts=["a billing question"] * 100, pace_seconds=0.2)
    ctx = Context(running_job("classify_batch", None))
    task = asyncio.create_task(asyncio.to_thread(classify_batch, ctx, batch))
    await asyncio.sleep(0.5)
    ctx.request_stop("cancel requested")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)
    assert 0.0 < ctx.progress_value < 0.1
