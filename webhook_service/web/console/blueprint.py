"""The console's one blueprint; each page module adds its views to it."""

from __future__ import annotations

from flask import Blueprint

PREFIX = "/console"

bp = Blueprint(
    "console",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
