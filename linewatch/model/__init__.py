"""The ResSE network and everything that needs torch: training, evaluation, ablations, ONNX export.

Modules: `resse` (network, NetworkConfig), `data` (tensor cache, crop augmentation), `train`
(two-stage training), `metrics` (AP_pos, AP_neg, TPR_t, TNR_t; numpy only), `evaluate`, `ablate`,
`export` (`export_onnx`, `load_model`). Nothing is imported here: `import linewatch.model.metrics`
does not pull torch in. See docs/model.md.
"""
