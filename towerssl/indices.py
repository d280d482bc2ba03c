"""The index contract every encoded field follows (docs/tables.md), defined once for the ETL, the statistics
and the model, which must agree on it to the value.

An id without a trained embedding (an item with no training click, or fewer than `id_min_count`) takes
DEFAULT, the value the SSL views give a masked id: SSL trains the item tower to embed exactly that input
from the item's other fields, so a new item enters the tower the way a masked one does. A shared UNKNOWN id
would be an input neither task trains in that role (docs/experiments.md measured new items collapsing onto it).
"""

PAD = 0  # padding of multi-valued fields; never a value, its embedding stays zero and never learns
DEFAULT = 1  # the value a missing or masked field takes; its embedding is learned
UNKNOWN = 2  # a feature value outside the vocabulary (unseen, or below min_count)
FIRST_VALUE = 3  # known values start here
UNTRAINED_ID = DEFAULT  # the id field's value for an entity whose id has no trained embedding
# The ETL's `untrained_id` option: "unknown" keeps the shared UNKNOWN id of earlier versions, only to compare.
UNTRAINED_ID_CHOICES = {"masked": UNTRAINED_ID, "unknown": UNKNOWN}
