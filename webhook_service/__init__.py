"""Stripe webhook service. Importing the package loads nothing: the layers live in subpackages.

`core` (models, errors, config, payload values) is the bottom; `handlers` (a top-level package)
turns events into rows on top of it; `processing` drains, retries and recovers; `web`, `cli`,
`workers`, `startup` and `demo` are the processes on top. docs/design.md draws it.
"""

__version__ = "0.2.0"
