"""The runtime pipeline, one module per stage, in the order data flows:

acquire -> ring -> infer -> decide -> publish, wired by `daemon` (and `swap`, the model hot swap).

Nothing here imports torch; the offline tools (`linewatch.model`, `linewatch.data`,
`linewatch.bench`) sit beside this package, not inside it.
"""
