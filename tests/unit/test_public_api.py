"""The public surface is what __all__ says, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["kobako", "kobako.errors", "kobako.image", "kobako.runtime"])
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name


def test_errors_share_one_base() -> None:
    import kobako.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.KobakoError), name
