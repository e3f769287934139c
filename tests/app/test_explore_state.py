"""Explore's state without a widget: what is selected, what is cached, what the text says (no Qt is touched)."""

from __future__ import annotations

import numpy as np

from app.explore.compute import ExploreRun, MapRequest, MapResult, PartsLayer
from app.explore.state import ALL_PARTS, CACHE_SIZE, ONE_MAP, ExploreState
from engine.data import DataReport, Sample
from engine.events import Message, Progress
from engine.fieldmarks.onbird import PartPlace
from engine.maps.parts import Part
from engine.runs import RunInfo

CLASSES = ("Black_Tern", "Common_Tern", "Arctic_Tern")


def explore_run(parts: int = 0) -> ExploreRun:
    methods = ("channels", "gradcam") if parts else ("channels", "tasn", "gradcam")
    return ExploreRun(RunInfo("/runs/r1", "smallnet", "parts" if parts else "mcloss", CLASSES), methods, None, parts)


def part(k: int, score: float = 2.0, duplicate_of: int | None = None) -> Part:
    return Part(k, k, f"ch{k}", (10.0 + k, 20.0), (10.0, 20.0), (0.0, 0.0, 8.0, 8.0), score, score / 4, duplicate_of)


def result(path: str = "a.jpg", method: str = "channels", cls: int = 1, layer: PartsLayer | None = None,
           maps: int = 3, nbytes: int = 0) -> MapResult:
    probs = np.array([0.2, 0.7, 0.1], np.float32)
    image = np.zeros((max(1, nbytes // 3), 1, 3), np.uint8)
    return MapResult("/runs/r1", path, method, cls, image, (40, 30), 1.0, probs, [f"map {k}" for k in range(maps)],
                     np.zeros((maps, 4, 4), np.float32), np.zeros((maps, 2, 2), np.float32),
                     [part(k, duplicate_of=0 if k == 2 else None) for k in range(maps)],
                     [np.zeros((12, 16, 3), np.uint8)] * maps, [], layer)


def layer() -> PartsLayer:
    scores = np.array([[0.0, 3.0, 1.0], [0.0, 6.0, 0.0], [0.0, -1.5, 2.0]], np.float32)  # (K=3, classes)
    return PartsLayer(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.array([0.9, 0.9, 0.2], np.float32),
                      scores)


def loaded(parts: int = 0, view: str = ONE_MAP) -> ExploreState:
    st = ExploreState()
    st.set_run(explore_run(parts).run)
    assert st.run_loaded(explore_run(parts))
    st.view = view
    st.select(Sample("a.jpg", 1, "test"))
    return st


def test_a_run_loaded_after_another_was_chosen_is_dropped():
    st = ExploreState()
    st.set_run(RunInfo("/runs/other"))
    assert not st.run_loaded(explore_run()) and st.info is None
    st.set_run(None)
    assert st.run_path == "" and st.lookup("channels") is None


def test_the_first_request_asks_the_lane_then_the_cache_answers():
    st = loaded()
    req = st.lookup("channels")
    assert req == MapRequest("/runs/r1", "a.jpg", "channels", None)  # the predicted class, not known yet
    r = result()
    assert st.store(r)  # the image shown
    assert st.lookup("channels") is r  # the predicted class (1) is known now: cached
    assert isinstance(st.lookup("gradcam"), MapRequest)
    assert st.lookup("") is None


def test_choosing_a_class_and_an_image():
    st = loaded()
    st.store(result())
    st.class_choice = 2
    assert st.lookup("channels") == MapRequest("/runs/r1", "a.jpg", "channels", 2)
    assert not st.select(Sample("a.jpg", 1, "test")) and st.class_choice == 2  # the same image: kept
    assert st.select(Sample("b.jpg", 0, "test")) and st.class_choice is None
    assert not st.store(result())  # a.jpg's maps arrive late: cached, not shown
    assert (("/runs/r1", "a.jpg", "channels", 1)) in st.cache


def test_the_cache_is_bounded_by_count_and_by_bytes():
    st = loaded()
    for i in range(CACHE_SIZE + 5):
        st.store(result(path=f"{i}.jpg"))
    assert len(st.cache) == CACHE_SIZE and ("/runs/r1", "0.jpg", "channels", 1) not in st.cache
    st.cache.clear()
    from app.explore import state as state_module
    big = state_module.CACHE_BYTES // 2 + 3
    for i in range(3):
        st.store(result(path=f"big{i}.jpg", nbytes=big))
    assert [k[1] for k in st.cache] == ["big2.jpg"]  # each one alone is half the budget: only the newest stays


def test_showing_keeps_the_picked_map_and_names_the_predictions():
    st = loaded()
    assert st.show(result()) and not st.show(result(method="gradcam"))  # the same image: no new photo
    st.map_index = 2
    assert st.kept_map() == 2
    st.show(result(maps=1))
    assert st.kept_map() == 0
    assert st.predictions() == [(1, "Common_Tern   70.0 %"), (0, "Black_Tern   20.0 %"), (2, "Arctic_Tern   10.0 %")]


def test_the_one_map_caption():
    st = loaded()
    st.show(result())
    assert st.map_caption(0) == "map 0 · score 2 (50 % of the strongest) · peak (10, 20) · crop 16×12 px"
    assert st.map_caption(2).endswith("· repeats part 1")
    assert st.maps_state(parts=False).map_index == -1 and st.maps_state(parts=False).view == ONE_MAP
    assert st.computing_text("gradcam") == "Computing Grad-CAM maps…"


def test_all_parts_is_only_for_a_parts_run():
    assert not loaded(parts=0, view=ALL_PARTS).all_parts()
    st = loaded(parts=3, view=ALL_PARTS)
    assert st.all_parts() and st.method_label("channels") == "Shared parts"
    assert loaded().method_label("channels") == "Part channels (MC-Loss)"
    st.view = ONE_MAP
    assert not st.all_parts()


def test_the_focused_part_and_the_part_texts():
    st = loaded(parts=3, view=ALL_PARTS)
    st.show(result(layer=layer()))
    assert st.has_parts_layer() and st.focused_part() == 1  # the class's (1) top scorer
    st.isolated = 2
    assert st.focused_part() == 2
    st.hovered = 0
    assert st.focused_part() == 0
    st.part_names = {1: "crown"}
    assert st.map_name(1) == "crown" and st.map_name(0) == "part 1"
    assert st.part_text(1) == ("crown · score 6.00 for Common Tern (rank 1 of 3; adds +2.00 to the class logit "
                               "2.50)")
    assert st.part_text(2).endswith("(rank 3 of 3; adds -0.50 to the class logit 2.50) · not active on this photo")
    assert st.maps_state(parts=True).map_index == 2 and st.maps_state(parts=True).view == ALL_PARTS
    st.isolated = 5
    st.clamp_isolated()
    assert st.isolated is None
    assert st.renamed_text(1, "crown") == "Part 2 is now 'crown'." and st.renamed_text(1, " ") == \
        "Part 2 has no name now."


def test_the_on_bird_shares_are_computed_once_per_run_and_data():
    st = loaded(parts=3)
    assert st.places_to_compute() == ""  # no data open
    st.report = DataReport("/data/terns", "class-folders", list(CLASSES), [])
    assert st.places_to_compute() == "/runs/r1"
    assert st.places_to_compute() == ""  # started already
    st.report = DataReport("/data/gulls", "class-folders", ["Herring_Gull"], [])
    assert st.places_to_compute() == ""  # another data set: no marks
    places = [PartPlace(0, 0.9, None, 10, "box"), PartPlace(1, 0.1, None, 10, "box"), PartPlace(2, 0.8, None, 4, "box")]
    assert st.places_found("/runs/other", places) is None and st.places is None
    st.part_names = {1: "sky"}
    assert st.places_found("/runs/r1", places) == "Background / habitat parts: sky." and st.places is places
    assert st.places_found("/runs/r1", [places[0]]) == "Every part lies on the bird."
    assert st.places_progress(Progress("places", 3, 8)) == "On-bird shares (training photos): 3/8"
    assert st.places_progress(Message("info", "x")) == ""


def test_an_unreadable_shares_file_is_not_computed_again():
    st = loaded(parts=3)
    st.report = DataReport("/data/terns", "class-folders", list(CLASSES), [])
    st.places_unreadable()
    assert st.places_to_compute() == ""
    st.set_run(explore_run(3).run)
    assert st.places_for == "" and st.places is None


def test_an_attention_blocks_caption_gives_its_gate_and_a_blank_map_says_so():
    st = loaded()
    r = result(method="attention", maps=2)
    r.ranges = [(0.42, 1.32), (1.0004, 1.001)]
    st.show(r)
    assert st.map_caption(0) == ("map 0 · gate 0.42 to 1.32 (1 leaves the features as they are; the colours stretch "
                                 "this range) · peak (10, 20) · crop 16×12 px")  # no score, no "repeats part"
    assert st.map_caption(1).startswith("map 1 · gate 1.00040 to 1.00100, nearly uniform (") and not st.blank_map(1)
    r.ranges[1] = (1.0, 1.0)  # blocks still at their start
    assert st.blank_map(1) and st.map_caption(1) == \
        "map 1 · gate 1.000 everywhere: the block weighs every position alike (a blank map)"
    st.show(g := result(method="gradcam", maps=1))
    g.ranges = [(0.0, 0.0)]  # a Grad-CAM the ReLU zeroed
    assert st.blank_map(0) and st.map_caption(0) == "map 0 · 0 everywhere: nothing stands out (a blank map)"
    g.ranges = [(0.0, 0.5)]
    assert not st.blank_map(0) and st.map_caption(0).startswith("map 0 · score 2 (50 % of the strongest) · peak")
