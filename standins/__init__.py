"""Loopback stand-ins for the outside systems, for the demo, the tests and the benchmarks.

Each speaks the real wire format on a loopback port, so the real client libraries talk to it:
``slack`` (Web API, Events API and interactivity), ``telegram`` (Bot API), ``mail`` (an SMTP
relay that keeps what it receives), ``callbacks`` (a webhook caller's reply endpoint). ``demo``
runs the service against them. Nothing in ``adapters/`` imports this package.
"""
