"""The baseline for bench/receiver.py: a Flask endpoint that only reads the body and answers."""

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/stripe")
def receive():
    request.get_data()
    return {"received": True}, 200
