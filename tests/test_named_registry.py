"""NamedRegistry, behind the roles, prompt kinds and guidance methods: clashing names are refused, unknown
names list the registered ones and the closest, a copy registers apart."""

from __future__ import annotations

import pytest

from lightning_diffusion.config import ConfigError
from lightning_diffusion.named_registry import NamedRegistry


def test_entries_come_back_by_name_in_registration_order():
    registry = NamedRegistry[int]("widget", "widgets")
    registry.register("b", 2)
    registry.register("a", 1)
    registry.register("b", 2)  # the same entry again is no clash
    assert registry.get("a") == 1 and "b" in registry and "c" not in registry
    assert registry.names() == ["b", "a"] and registry.entries() == [2, 1]
    assert NamedRegistry[int]("widget", "widgets", sort=True).names() == []


def test_a_second_entry_under_a_taken_name_is_refused():
    registry = NamedRegistry[int]("widget", "widgets")
    registry.register("a", 1)
    with pytest.raises(ConfigError, match="two widgets are named 'a'; rename one"):
        registry.register("a", 2)
    assert registry.get("a") == 1


def test_an_unknown_name_lists_the_names_the_closest_and_who_asked():
    registry = NamedRegistry[int]("widget", "widgets", hint=" (add one with register_widget)")
    for name in ("sprocket", "gear"):
        registry.register(name, len(name))
    with pytest.raises(ConfigError) as caught:
        registry.get("sprockt", asked_by="the gearbox")
    assert str(caught.value) == (
        "the gearbox names unknown widget 'sprockt' (did you mean sprocket?); the widgets are: sprocket, "
        "gear (add one with register_widget)."
    )


def test_a_copy_registers_without_touching_the_original():
    registry = NamedRegistry[int]("widget", "widgets")
    registry.register("a", 1)
    twin = registry.copy()
    twin.register("b", 2)
    assert "b" in twin and "b" not in registry and twin.get("a") == 1
