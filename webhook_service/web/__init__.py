"""Top layer, web side: the Flask app factory, the receiver, the read API, health and metrics."""
