"""linewatch: real-time camera line inspection for battery-cell production."""

__version__ = "0.1.0"

HEADS: tuple[str, str] = ("anomaly", "adhesive")
"""The two heads of the ResSE network, in output order (masks channel / scores column)."""

DEFAULT_THRESHOLD = 0.7
"""The paper's decision threshold (§4.3): a head's score >= it is a positive. What a model without a
recommended operating point (`linewatch.calibrate.recommend`) and a profile without thresholds decide at."""
