"""Field marks: the names a user gives a run's parts (:mod:`.names`), the parts whose class scores separate two
species (:mod:`.separation`) and the printable field guide built from them (:mod:`.guide`)."""

from engine.fieldmarks.guide import GuideResult, write_guide
from engine.fieldmarks.names import (NameProposal, accepted_names, label_maps, part_label, propose_names,
                                     read_part_names, run_part_count, set_part_name, write_part_names)
from engine.fieldmarks.palette import PART_COLOURS, part_colour, part_hex
from engine.fieldmarks.separation import (PartScores, Separation, collect_part_scores, confused_pairs,
                                          nearest_species, rank_parts)

__all__ = ["GuideResult", "write_guide", "PART_COLOURS", "part_colour", "part_hex", "NameProposal", "accepted_names",
           "label_maps", "part_label", "propose_names", "read_part_names", "run_part_count", "set_part_name",
           "write_part_names", "PartScores", "Separation", "collect_part_scores", "confused_pairs", "nearest_species",
           "rank_parts"]
