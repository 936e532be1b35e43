"""The traffic simulator: deterministic, realistic synthetic labelled traffic for semwatch.

:func:`semwatch.simulator.generate.generate` ``(seed, start, duration_s, rate, incidents)`` returns
an iterator of normalized run events (dicts in the run-event contract, docs/contracts.md, sorted by ``ts``) and
the list of labelled incident windows; ``semwatch generate`` writes them as JSON Lines or to Kafka,
``semwatch demo`` plays them live against a worker.

What the traffic looks like
---------------------------
* Four apps with distinct shapes: ``support-bot`` (chat, one event per turn, multi-turn
  conversations), ``order-agent`` (multi-step tool-calling runs over a customer/order universe),
  ``research-agent`` (long runs, context grows step by step) and ``code-assistant`` (long outputs).
* 20 tenants with Zipf-distributed traffic, per-route models, providers and prompt versions.
* Two quiet support-bot routes beside the app's split, ``warranty`` (~1 request/min in the daytime)
  and ``accessibility`` (~3/min), a fifth of that at night, whatever ``rate`` says; see ``quiet.py``.
* Poisson arrivals whose rate follows a per-app diurnal curve (low at night, peak in the day),
  lower on weekends, with day-to-day variation and minute-level burstiness.
* Lognormal token counts per app/route/model, prices from :data:`~semwatch.simulator.world.PRICES`
  (``cost_usd`` omitted on ~30 % of events), latency tied to output tokens, occasional timeouts and
  rate limits (plus short unlabelled rate-limit bursts per provider).
* Varied request/response texts with fake-but-realistic PII, ordinary refusals at a low base rate,
  flagged (harmful) requests that are legitimately refused, compositional refusal phrasings and
  helpful answers that apologise or say "can't" without refusing.
* Configuration churn that is *not* an incident: benign prompt rollouts (some canaried, some rolled
  back, with small shifts in prompt length and verbosity) and benign model swaps between
  similarly priced models.

Incidents (``incidents=True``) start no earlier than 3 h after ``start``; about one of each kind
per simulated day, each producing exactly one label:

``false_refusal_spike``  a new prompt version on one support-bot route refuses ordinary requests at
                         25-60 % until it is rolled back.  segment = {app, route, model,
                         prompt_version (the bad one)}; start = rollout, end = rollback.
                         And each day on the quiet routes (``quiet.py``), in daytime: 40 % for an
                         hour on ``warranty``, 12 % (over ~1.5 %) for an hour on ``accessibility``.
``wrong_entity_action``  an order-agent run calls a side-effecting tool on another customer's order
                         (not in ``subject``, not returned by the run's earlier reads).
                         segment = {app, route, model}; start = end = that event's ts; run_id.
``token_spike``          a runaway agent loop of 40-150 steps with growing input tokens: tight (steps
                         follow each other as fast as a normal run's, a few minutes in all) or
                         polling (the same steps spread over 10-40 min), half each.
                         segment = {app, route, model}; start/end = first/last step; run_id.
``cost_spike``           a route is switched to a 10-30x more expensive model, then back.
                         segment = {app, route}; note names both models; start/end = the switches.

``malformed_tool_call``, ``complaint_cluster`` and ``grounding_drop`` (one of each a day too): see
``runbook.py``.

Windows are the change times; requests already in flight at a switch complete (and are stamped) up
to one request latency later on the configuration they started with.  Benign churn, provider
rate-limit bursts and heavy-tailed but legitimate runs (up to ~34 agent steps, 25k-token code
contexts) are deliberately left in: they are the false-alarm material.  The bursts (5-25 % more
failed calls for 3-15 min, about 0.7 a day, whatever ``incidents`` says) are real errors, though:
each gets an *optional* ``threshold`` label (segment = {provider}), which ``semwatch evaluate``
neither requires nor counts as a false alarm for a threshold rule such as ``error-rate``.

Tool calls carry ``side_effect`` on ~70 % of order-agent runs only (as with real producers); the
rest rely on the tool map in ``config/``.

Where things are
----------------
``generate.py``        the public API and the ``semwatch generate`` command
``simulation.py``      one simulation, start to end: world, schedule, labels, then traffic
``world.py``           models, prices, apps, routes, tenants (the fixed facts)
``population.py``      tenants' customers and their orders, fake PII
``routes.py``          routes, their scheduled changes and timelines of configuration states
``incidents.py``       scripted incidents and their runs;  ``churn.py`` benign changes, rate-limit bursts
``quiet.py``           the quiet routes: their schedule, churn and traffic, each from a stream of its own
``runbook.py``         the runbook incidents (malformed tool calls, complaint bursts, grounding drops)
                       and their background, written onto the events
``labels.py``          the labelled windows
``traffic.py``         load curves, arrivals and the merged event stream
``calls.py``           what every model call shares: event fields, errors, tokens, cost, latency
``apps/``              one module per app shape
``texts.py``           filling templates, styling requests, composing refusals
``corpora/*.json``     the word lists, phrase tables and templates (``corpus.py`` loads them)
``randomness.py``      seeded random draws and ids;  ``clock.py`` time units and timestamps
``demo.py``, ``kafka_out.py``  the live side: ``semwatch demo`` and producing to Kafka

Determinism: every part draws from its own seeded stream, and the output depends on the exact order
of draws in each; see ``randomness.py`` before moving a draw.
"""
