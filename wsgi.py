"""Gunicorn entry point: `gunicorn wsgi:app`. The only module that builds an app at import.

gunicorn.conf.py's `on_starting` hook has already refused to start the server if the checks of
`webhook_service.startup` fail; this builds each worker's app.
"""

from webhook_service.startup import web_app

app = web_app()
