"""Names shared by the library and the pipeline: a leaf module (it imports nothing)."""

BASELINE = "random"  # the null attribution every method is compared against
