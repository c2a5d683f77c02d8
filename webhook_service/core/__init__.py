"""Bottom layer: models, typed errors, config and payload value readers.

No Flask, RQ, Redis or Sentry here: handlers import only this layer.
"""
