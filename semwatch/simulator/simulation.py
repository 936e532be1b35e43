"""One simulation: the world, its schedule of changes and incidents, the labels, then the traffic."""

from __future__ import annotations

import heapq
from typing import Iterator

import numpy as np

from semwatch.simulator import labels, traffic
from semwatch.simulator.churn import schedule_churn
from semwatch.simulator.incidents import play_incident_runs, schedule_incidents
from semwatch.simulator.population import Population
from semwatch.simulator.quiet import quiet_stream, schedule_quiet_routes
from semwatch.simulator.routes import Routes, Schedule, build_timeline
from semwatch.simulator.runbook import Annotator, schedule_runbook_incidents
from semwatch.simulator.traffic import LoadCurve


class Simulation:
    """Everything but the traffic is decided up front (cheap); :meth:`events` streams the traffic."""

    def __init__(self, seed: int, start: float, duration_s: float, rate: float, incidents: bool,
                 refusal_field_fraction: float, cost_field_fraction: float):
        if duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.seed = int(seed)
        self.start = float(start)
        self.end = self.start + float(duration_s)
        self.duration = float(duration_s)
        self.rate = float(rate)
        self.refusal_field_fraction = refusal_field_fraction
        self.cost_field_fraction = cost_field_fraction
        # one independent stream per part, so that e.g. incidents=False leaves the churn as it was
        seeds = np.random.SeedSequence(self.seed)
        world_seed, schedule_seed, churn_seed, incident_runs_seed, self._traffic_seed = seeds.spawn(5)
        keys = np.random.Generator(np.random.PCG64(seeds.spawn(1)[0])).integers(0, 2**63, size=4)
        self._id_keys = (int(keys[0]), int(keys[1]))  # run ids, event ids
        # Spawned after the streams above, so that those stay what they were.
        runbook_seed, self._annotation_seed = seeds.spawn(2)
        quiet_incident_seed, quiet_churn_seed, self._quiet_traffic_seed, self._quiet_annotation_seed = seeds.spawn(4)

        self.routes = Routes()
        self.population = Population(world_seed)
        self.load = LoadCurve(self.seed)
        self.labels: list[dict] = []
        schedule = Schedule()
        planned_runs = (schedule_incidents(schedule_seed, self.routes, schedule, self.start, self.duration)
                        if incidents else [])
        self.rate_limit_bursts = schedule_churn(churn_seed, self.routes, schedule, self.start, self.duration)
        if incidents:  # after the churn: the runbook incidents find their place around everything else
            schedule_runbook_incidents(runbook_seed, self.routes, schedule, self.start, self.duration, planned_runs)
        schedule_quiet_routes(quiet_incident_seed, quiet_churn_seed, self.routes, schedule, self.start, self.duration,
                              incidents)
        for route in self.routes.all + self.routes.quiet:  # the quiet routes' labels last: the others' order holds
            build_timeline(route, self.labels)
        self._incident_events = play_incident_runs(self, planned_runs, incident_runs_seed, self._id_keys,
                                                   self.labels)
        self.labels.extend(labels.provider_burst(*burst) for burst in self.rate_limit_bursts)
        self.labels.sort(key=lambda label: (label["start"], label["kind"], label["end"]))

    def events(self) -> Iterator[dict]:
        scripted = {ev["event_id"] for _, ev in self._incident_events}
        annotate = Annotator(self, self._annotation_seed, scripted)
        busy = annotate(traffic.stream(self, self._traffic_seed, self._id_keys, self._incident_events))
        annotate_quiet = Annotator(self, self._quiet_annotation_seed, set(), self.routes.quiet)
        quiet = annotate_quiet(quiet_stream(self, self._quiet_traffic_seed, self._id_keys))
        return heapq.merge(busy, quiet, key=lambda ev: ev["ts"])  # RFC 3339 UTC, fixed width: sorts as time
