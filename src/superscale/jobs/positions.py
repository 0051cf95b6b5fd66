"""Queue positions under fair shares, computed once per snapshot of the queue instead of
counted per poll.

Claims (the `claim` statement of `queries.sql`) take the highest priority first; within a
priority they go round the keys (owners) with queued jobs, least recently served first (ties:
the key whose oldest job is older), each key's jobs oldest first. `QueueOrder` replays that
order over a snapshot of the queue, so a position is a dictionary lookup; a job submitted after
the snapshot is placed by counting, per priority, what the round would serve before it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

# A key's place in the round: (served in this snapshot?, its last turn or serve counter, the
# seq of its next job). Never served in the snapshot: (0, last turn, seq); served: (1, n, seq).
TurnKey = tuple[int, float, int]


@dataclass(frozen=True)
class QueuedJob:
    id: str
    owner: str
    priority: int
    seq: int


@dataclass
class _Level:
    """One priority's part of the queue: how many jobs come before it, and each key's place
    in the round when the level starts and how many jobs it has queued there."""

    ahead: int
    starts: dict[str, TurnKey] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class QueueOrder:
    """The order claims will take a snapshot of runnable queued jobs in."""

    def __init__(self, jobs: list[QueuedJob], turns: dict[str, float]) -> None:
        self._turns = turns
        self.positions: dict[str, int] = {}
        self._levels: dict[int, _Level] = {}
        self._priorities: list[int] = []  # descending
        served: dict[str, TurnKey] = {}  # keys' places after the levels replayed so far
        by_level: dict[int, dict[str, list[QueuedJob]]] = {}
        for job in sorted(jobs, key=lambda j: j.seq):
            by_level.setdefault(job.priority, {}).setdefault(job.owner, []).append(job)
        counter = 0
        for priority in sorted(by_level, reverse=True):
            owners = by_level[priority]
            level = _Level(ahead=len(self.positions), starts=dict(served))
            heap: list[tuple[TurnKey, str]] = []
            for owner, queued in owners.items():
                start = self._start(owner, queued[0].seq, served)
                level.starts[owner] = start
                level.counts[owner] = len(queued)
                heap.append((start, owner))
            heapq.heapify(heap)
            taken = dict.fromkeys(owners, 0)
            while heap:
                _, owner = heapq.heappop(heap)
                queued = owners[owner]
                self.positions[queued[taken[owner]].id] = len(self.positions)
                taken[owner] += 1
                counter += 1
                served[owner] = (1, counter, 0)
                if taken[owner] < len(queued):
                    heapq.heappush(heap, ((1, counter, queued[taken[owner]].seq), owner))
            self._levels[priority] = level
            self._priorities.append(priority)

    def _start(self, owner: str, seq: int, served: dict[str, TurnKey]) -> TurnKey:
        if owner in served:
            return served[owner]
        return (0, self._turns.get(owner, 0.0), seq)

    def position(self, job: QueuedJob) -> int:
        """Jobs claims will take before this one; for a job the snapshot lacks (submitted
        since), as if it were appended to its key's jobs."""
        if job.id in self.positions:
            return self.positions[job.id]
        ahead = sum(self._level_size(p) for p in self._priorities if p > job.priority)
        level = self._levels.get(job.priority)
        if level is None:
            return ahead
        mine = level.counts.get(job.owner, 0)  # the round in which this job is served
        start = level.starts.get(job.owner) or (0, self._turns.get(job.owner, 0.0), job.seq)
        for owner, count in level.counts.items():
            if owner == job.owner:
                ahead += count
            else:
                ahead += min(count, mine) + (count > mine and level.starts[owner] < start)
        return ahead

    def append(self, job: QueuedJob) -> bool:
        """Take in a job just submitted when claims will take it last (the common case: one
        more job at the queue's lowest priority, behind its key's others), leaving every other
        position as it was; False (nothing changed) when it would move others."""
        level = self._levels.get(job.priority)
        if level is None or job.id in self.positions:
            return False
        position = self.position(job)
        if position != len(self.positions):
            return False
        if job.owner not in level.starts:
            level.starts[job.owner] = (0, self._turns.get(job.owner, 0.0), job.seq)
        level.counts[job.owner] = level.counts.get(job.owner, 0) + 1
        self.positions[job.id] = position
        return True

    def _level_size(self, priority: int) -> int:
        return sum(self._levels[priority].counts.values())
