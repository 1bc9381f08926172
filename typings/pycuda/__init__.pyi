# Minimal stubs for pycuda: only what linewatch.engines.{trt,build} call. Extend as needed.
