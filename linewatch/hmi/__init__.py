"""The operator page (`linewatch hmi`): a separate process that subscribes to a daemon like any gateway.

`aggregate` turns the message stream into the page's state (pure, no web); `server` serves it
(Starlette + uvicorn, the `hmi` extra: `pip install 'linewatch[hmi]'`); `static/` holds the page
(plain HTML/CSS/JS, nothing from outside). docs/hmi.md.
"""
