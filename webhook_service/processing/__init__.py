"""Middle layer: event log, queue, drains, single attempts, recovery, replay, resync, sweep.

No Flask: processes on top hand it a Database and an EventQueue.
"""
