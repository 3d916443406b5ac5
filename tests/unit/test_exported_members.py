"""The public names: one sorted ``__all__`` that matches what the package exposes."""

from __future__ import annotations

import inspect

import longjobs


def test_all_is_sorted_without_duplicates() -> None:
    assert longjobs.__all__ == sorted(set(longjobs.__all__))


def test_every_exported_name_is_importable() -> None:
    for name in longjobs.__all__:
        assert getattr(longjobs, name) is not None, name


def test_every_public_member_is_exported() -> None:
    public = {
        name
        for name, value in vars(longjobs).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert public == set(longjobs.__all__)
