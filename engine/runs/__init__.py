"""Run folders: their files (:mod:`.files`, the only module that names them), the saved split laid over a data
folder (:mod:`.split`), loading the model (:mod:`.load`) and listing runs (:mod:`.listing`). The files:

* ``model.safetensors`` (tensors) + ``model.json`` (architecture, classes, preprocessing, config, versions,
  metrics, the data changes a resume was allowed to accept);
* ``metrics.jsonl`` (one line per epoch);
* ``resume.pt`` (model, optimizer, learning-rate schedule and GradScaler state; plain containers read back with
  ``weights_only=True``);
* ``split.json`` (the photos of each split with their fingerprints, :mod:`engine.data.split`);
* ``evaluation.json`` (the figures of :mod:`engine.evaluation.evaluate`, written by the demo and the app);
* ``part_names.json`` (the names the user gave the run's parts, :mod:`engine.fieldmarks.names`);
* ``part_places.json`` (each part's on-bird share over the training photos, :mod:`engine.fieldmarks.onbird`);
* ``overlays/`` (the demo's map overlays).

Every file is written atomically, so a killed run is never unreadable. Resume, evaluate, Compare and export lay
the saved split over the data folder with :func:`run_split` / :func:`use_run_split`.
"""

from engine.runs.files import (EVALUATION, FORMAT, FORMAT_VERSION, METRICS, MODEL_JSON, MODEL_WEIGHTS, OVERLAYS,
                               PART_NAMES, PART_NAMES_FORMAT, PART_NAMES_VERSION, PART_PLACES, PART_PLACES_FORMAT,
                               PART_PLACES_VERSION, RESUME, RUN_FILES, SPLIT, is_run, load_resume, read_evaluation,
                               read_history, read_meta, read_part_names, read_part_places, read_split,
                               remove_orphan_temps, run_dir_of, save_epoch, save_state_dict, weights_stamp,
                               write_evaluation, write_part_places, write_split)
from engine.runs.listing import RunInfo, list_runs
from engine.runs.load import LoadedRun, load_run, load_weights
from engine.runs.split import RunData, run_split, use_run_split

__all__ = [
    "EVALUATION", "FORMAT", "FORMAT_VERSION", "METRICS", "MODEL_JSON", "MODEL_WEIGHTS", "OVERLAYS", "PART_NAMES",
    "PART_NAMES_FORMAT", "PART_NAMES_VERSION", "PART_PLACES", "PART_PLACES_FORMAT", "PART_PLACES_VERSION", "RESUME",
    "RUN_FILES", "SPLIT", "LoadedRun", "RunData", "RunInfo", "is_run", "list_runs", "load_resume", "load_run",
    "load_weights", "read_evaluation", "read_history", "read_meta", "read_part_names", "read_part_places",
    "read_split", "remove_orphan_temps", "run_dir_of", "run_split", "save_epoch", "save_state_dict", "use_run_split",
    "weights_stamp", "write_evaluation", "write_part_places", "write_split",
]
