"""Field marks: the names a user gives a run's parts (:mod:`.names`), the parts whose class scores separate two
species (:mod:`.separation`) and the printable field guide built from them (:mod:`.guide`)."""

from engine.fieldmarks.names import (folder_label, part_label, read_part_names, run_part_count, set_part_name,
                                     write_part_names)

__all__ = ["folder_label", "part_label", "read_part_names", "run_part_count", "set_part_name", "write_part_names"]
