"""Data: find the images of a folder in one of three layouts, report what cannot be used, split, load.

Layouts, detected automatically (see :func:`scan`):

1. ``class-folders``: ``ROOT/<class>/**/*.jpg``. Split: ``ROOT/split.csv`` (columns ``path`` and ``split``) when
   present, else seeded and stratified per class (default 80/20, :func:`engine.data.split.draw_test`). An existing
   ``ROOT/train`` + ``ROOT/test`` pair of class folders is used as it is (``train-test-folders``).
2. ``cub``: the official CUB_200_2011 layout (images.txt, classes.txt, image_class_labels.txt,
   train_test_split.txt, bounding_boxes.txt, parts/), with its own split, boxes and part locations.
3. ``flat``: a folder of images with no classes (prediction and maps only).

A trained run keeps the split it was given (:mod:`engine.data.split`, saved by :mod:`engine.runs`); the draw above
only makes new ones.
"""

from engine.data.scan import DataReport, Sample, Skipped, require_trainable, scan

__all__ = ["DataReport", "Sample", "Skipped", "scan", "require_trainable"]
