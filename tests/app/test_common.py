"""The toolkit's Qt-free helpers: the bounded-cache trim, the method labels and the error text."""

from __future__ import annotations

from collections import OrderedDict

from app.common.caches import trim_oldest
from app.common.text import (MAP_METHOD_LABELS, TRAINING_METHOD_LABELS, error_text, map_method_label,
                             training_method_label)
from engine.errors import ConfigError
from engine.maps.methods import METHODS, REGISTRY
from engine.training.config import METHODS as TRAINING_METHODS


def test_trim_keeps_the_newest():
    cache = OrderedDict((k, k) for k in "abcde")
    cache.move_to_end("a")  # used again: now the newest
    trim_oldest(cache, 3)
    assert list(cache) == ["d", "e", "a"]
    trim_oldest(cache, 5)
    assert list(cache) == ["d", "e", "a"]


def test_trim_by_weight_keeps_at_least_the_newest_entry():
    cache = OrderedDict([("a", 10), ("b", 10), ("c", 30)])
    trim_oldest(cache, 48, weight=lambda v: v, budget=40)
    assert list(cache) == ["b", "c"]
    trim_oldest(cache, 48, weight=lambda v: v, budget=5)
    assert list(cache) == ["c"]  # over the budget on its own, and kept


def test_every_method_has_a_label():
    assert set(MAP_METHOD_LABELS) == set(METHODS)
    assert set(TRAINING_METHOD_LABELS) == set(TRAINING_METHODS)
    assert map_method_label("gradcam") == "Grad-CAM" and map_method_label("new") == "new"
    assert training_method_label("mcloss") == "MC-Loss" and training_method_label("new") == "new"


def test_the_map_methods_are_the_registry_in_order():
    assert METHODS == tuple(REGISTRY) and METHODS[0] == "channels"


def test_error_text_names_a_bug_and_passes_an_engine_error_on():
    assert error_text(ConfigError("crop_size=-1: give a side")) == "crop_size=-1: give a side"
    assert error_text(KeyError("x")) == "KeyError: 'x'"
