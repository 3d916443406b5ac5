"""A small multinomial naive Bayes classifier for support messages, trained on built-in examples.

>>> classifier = support_classifier()
>>> classifier.predict("I was charged twice for my subscription").label
'billing'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from examples.text_analysis import terms

UNKNOWN = "unknown"
"""The label of a text that shares no word with the training examples."""

TRAINING_EXAMPLES: Mapping[str, Sequence[str]] = {
    "account": (
        "I cannot log in to my account after changing my password",
        "Please reset my password, the reset email never arrives",
        "How do I change the email address on my account profile",
        "My account is locked after too many login attempts",
        "I want to delete my account and all my personal data",
        "Two-factor authentication codes are not accepted when I sign in",
    ),
    "billing": (
        "I was charged twice for my monthly subscription",
        "Please send an invoice with our company tax number",
        "Why did my card payment fail when renewing the plan",
        "I would like a refund for the annual plan I cancelled",
        "The price on my invoice is higher than the pricing page",
        "Can I pay by bank transfer instead of credit card",
    ),
    "feedback": (
        "The new dashboard looks great and is much faster, thank you",
        "It would be nice to export reports as spreadsheets",
        "Please add a dark theme, the white screen is hard on the eyes",
        "Your support team was friendly and solved my question quickly",
        "I love the new search, it finds documents instantly",
        "Feature request: let us schedule reports every week",
    ),
    "technical": (
        "The app crashes with an error when I upload a large file",
        "The API returns a timeout error for long requests",
        "Pages load very slowly and sometimes show a server error",
        "The upload fails halfway and the progress bar freezes",
        "Sync stopped working after the latest update on my phone",
        "Webhook deliveries fail with connection refused errors",
    ),
}


@dataclass(frozen=True, slots=True)
class Prediction:
    """A label and the model's probability for it, in [0, 1]."""

    label: str
    confidence: float


class NaiveBayes:
    """Multinomial naive Bayes over ``terms()`` with add-``alpha`` smoothing.

    Deterministic: the same examples give the same model, and ties go to the label first in a-z
    order. Words never seen in training are ignored; a text with none of the known words gets
    ``UNKNOWN`` with confidence 0.
    """

    def __init__(self, examples: Mapping[str, Sequence[str]], *, alpha: float = 1.0) -> None:
        if not examples:
            raise ValueError("naive Bayes needs at least one labelled example")
        self.labels = sorted(examples)
        counts = {
            label: Counter(t for text in examples[label] for t in terms(text))
            for label in self.labels
        }
        self.vocabulary = frozenset(t for counter in counts.values() for t in counter)
        documents = sum(len(examples[label]) for label in self.labels)
        self._log_prior = {
            label: math.log(len(examples[label]) / documents) for label in self.labels
        }
        self._log_likelihood: dict[str, dict[str, float]] = {}
        for label in self.labels:
            denominator = sum(counts[label].values()) + alpha * len(self.vocabulary)
            self._log_likelihood[label] = {
                t: math.log((counts[label][t] + alpha) / denominator) for t in self.vocabulary
            }

    def predict(self, text: str) -> Prediction:
        """The most probable label of ``text`` and its posterior probability."""
        known = [t for t in terms(text) if t in self.vocabulary]
        if not known:
            return Prediction(UNKNOWN, 0.0)
        scores = {
            label: self._log_prior[label] + sum(self._log_likelihood[label][t] for t in known)
            for label in self.labels
        }
        best = max(self.labels, key=scores.__getitem__)  # the first of equal scores wins
        total = sum(math.exp(score - scores[best]) for score in scores.values())
        return Prediction(best, round(1.0 / total, 4))


@cache
def support_classifier() -> NaiveBayes:
    """The classifier trained on ``TRAINING_EXAMPLES`` (built once per process)."""
    return NaiveBayes(TRAINING_EXAMPLES)
