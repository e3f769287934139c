"""The app's shared toolkit, used by every workspace and owned by none: worker lanes and their tokens
(:mod:`app.common.lane`, :mod:`app.common.tokens`), the worker-side cache of loaded runs
(:mod:`app.common.model_cache`), array-to-pixmap helpers (:mod:`app.common.pixmaps`), small widget helpers
(:mod:`app.common.widgets`), bounded caches (:mod:`app.common.caches`) and the words shown for engine things,
method labels and error text (:mod:`app.common.text`).

Workspaces import from here and from the engine, never from each other (an import-linter contract in
``pyproject.toml``). :mod:`app.common.tokens` and :mod:`app.common.model_cache` import no Qt, so the workspaces' jobs
stay testable without it.
"""
