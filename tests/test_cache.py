"""Derivation cache: second runs skip symbolic work, keys are canonical, writes are atomic."""

import pytest

from lora_theory import cache, derivation, rates


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_THEORY_CACHE_DIR", str(tmp_path))
    rates._rate_functions.cache_clear()
    yield tmp_path
    rates._rate_functions.cache_clear()


def test_second_derivation_loads_from_disk(cache_folder, monkeypatch):
    first = derivation.derive("He3", "erf")

    def fail(*arguments, **keywords):
        raise AssertionError("symbolic derivation ran although a cache entry exists")

    monkeypatch.setattr(derivation, "_derive", fail)
    second = derivation.derive("He3", "erf")
    assert second.A == first.A
    assert second.gradient_second_moment == first.gradient_second_moment


def test_rates_warm_run_skips_sympy(cache_folder, monkeypatch):
    cold = rates.escape_rates("erf", mu=[0.3, 0.6])
    rates._rate_functions.cache_clear()

    def fail(*arguments, **keywords):
        raise AssertionError("derive() called on a warm rates cache")

    monkeypatch.setattr(rates, "derive", fail)
    warm = rates.escape_rates("erf", mu=[0.3, 0.6])
    assert warm.tau.tolist() == cold.tau.tolist()


def test_equivalent_specs_share_a_key(cache_folder):
    derivation.derive("He3^2", "x")
    count = len(list(cache_folder.glob("derivation-*.pickle")))
    derivation.derive("He3**2", "linear")
    assert len(list(cache_folder.glob("derivation-*.pickle"))) == count


def test_no_temporary_files_left(cache_folder):
    derivation.derive("relu")
    assert not list(cache_folder.glob(".tmp-*"))


def test_corrupt_entry_is_recomputed(cache_folder):
    derivation.derive("x")
    for path in cache_folder.glob("derivation-*.pickle"):
        path.write_bytes(b"not a pickle")
    with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
        result = derivation.derive("x")
    assert result.B == -1


def test_empty_setting_disables_cache(monkeypatch):
    monkeypatch.setenv("LORA_THEORY_CACHE_DIR", "")
    assert cache.cache_dir() is None
