"""Datasets on disk (folder format, magnetic-tile layout) and synthetic battery-cell surfaces.

``linewatch.data.dataset``: readers, checker and writer (re-exported here);
``linewatch.data.synth``: the synthetic surface renderer; ``linewatch.data.preview``: contact sheets.
"""

from linewatch.data.dataset import (
    CheckReport,
    Dataset,
    Problem,
    Sample,
    check_dataset,
    open_dataset,
    write_sample,
)

__all__ = ["CheckReport", "Dataset", "Problem", "Sample", "check_dataset", "open_dataset", "write_sample"]
