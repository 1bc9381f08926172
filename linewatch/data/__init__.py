"""Datasets on disk (folder format and the layouts people have) and synthetic battery-cell surfaces.

``linewatch.data.dataset``: reading (``open_dataset``, ``Dataset``, ``Sample``); ``linewatch.data.layouts``:
the MVTec AD and class-folder layouts; ``linewatch.data.check``: ``check_dataset``; ``linewatch.data.write``:
``write_sample``, ``merge_datasets``; ``linewatch.data.input_size``: the model input size for the images
(the main names re-exported here); ``linewatch.data.synth``: the synthetic surface renderer;
``linewatch.data.preview``: contact sheets.
"""

from linewatch.data.check import CheckReport, check_dataset
from linewatch.data.dataset import Dataset, Problem, Sample, open_dataset
from linewatch.data.write import write_sample

__all__ = ["CheckReport", "Dataset", "Problem", "Sample", "check_dataset", "open_dataset", "write_sample"]
