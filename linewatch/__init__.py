"""linewatch: real-time camera line inspection for battery-cell production."""

__version__ = "0.1.0"

HEADS: tuple[str, str] = ("anomaly", "adhesive")
"""The two heads of the ResSE network, in output order (masks channel / scores column)."""
