"""The four simulated apps, one module each: how a session or run turns into events.

Each module has one entry point ``…(maker, t0, out)`` that simulates one arrival (a chat session
or an agent run) starting at ``t0`` with the :class:`~semwatch.simulator.calls.EventMaker`
``maker`` and appends its events to ``out`` as ``(ms, event)``.
"""
