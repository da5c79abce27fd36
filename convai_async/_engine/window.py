"""How many requests may be at the server at once: the send window, and what 429s say of it.

A server may cap concurrency instead of (or as well as) rate: it refuses a request when more
than N are in flight. Pacing cannot help there, and a rate learnt from its refusals comes out
low (the pace's own bursts cross the cap). The two kinds of 429 look different from the
client: under a concurrency cap, requests sent while more than N were in flight are refused
and those sent at N or fewer are not; under a rate limit, refusals come at every level. So the
window records the **level** of each send (how many were at the server, itself included) and
counts answers per level (halved at each reaction, so old evidence fades). At a 429, it looks
for a level L with at most ``LOW`` of the requests sent at L or under refused, and at least
``HIGH`` of those sent above it (``MIN_EVIDENCE`` refusals or more), or failing that, whether
this refusal and one before it came at a level that at most ``RARE`` of the last ``RECENT``
answers reached, with the levels under it clean (a cap just under it: jitter blurs the levels,
so a cap rarely shows the first split clearly; a rate limit's refusals fall where the sends go):

* found: a concurrency cap at L. The window closes to L and stays there for a plateau
  (``FIRST_HOLD`` when the cap is new; from ``MIN_PLATEAU``, doubled each time the same cap is
  confirmed; never shorter than ``PROBE_COST`` times the pause, up to ``MAX_PLATEAU``),
  then grows by one slot per window of successes (AIMD's additive increase) until a 429 says
  where the cap is again. The limiter leaves the rate alone when the cap is confirmed, or
  found once with a cheap pause (a rate limit taken for a cap costs one more such pause), and
  lifts it to what the window lets by only when confirmed;
* not found: a rate limit. The window opens again (if it was closed) and the rate controller
  reacts.

No clock and no asyncio: the limiter passes the times and does the waiting.
"""

from __future__ import annotations

import collections

from .controller import MAX_PLATEAU, MIN_PLATEAU, PROBE_COST, next_plateau

__all__ = ["SendWindow"]

SMOOTHING = 0.1  # of each new latency in the moving average
LOW = 0.1  # at most this share refused at or under a cap
HIGH = 0.75  # at least this share refused above it
MIN_EVIDENCE = 6.0  # refusals above a cap before it is believed
FIRST_HOLD = 0.5  # seconds a cap found for the first time is held before probing
RARE = 0.05  # a level at most this share of the recent answers reached is a rare one
RECENT = 200  # answers whose levels say which levels are rare (a full set of them, no fewer)
RARE_EVIDENCE = 1.5  # fading refusals at a rare level or above: this one and one before it
MAX_LEVELS = 4096  # sends remembered; answers never given (timeouts) are forgotten at this size


class SendWindow:
    """The send window: ``limit`` requests at the server at once, ``max_concurrency`` at most."""

    __slots__ = (
        "_cap",
        "_hold_until",
        "_levels",
        "_max",
        "_ok",
        "_plateau",
        "_recent",
        "_refusals",
        "_refused",
        "confirmed",
        "latency",
        "limit",
        "size",
    )

    def __init__(self, max_concurrency: int) -> None:
        self._max = max_concurrency
        self.size = float(max_concurrency)
        self.limit = max_concurrency  # int(size): requests at the server at once
        self.latency: float | None = None  # moving average, seconds from send to success
        self._levels: dict[float, int | list[int]] = {}  # send time -> level(s) sent then
        self._refusals: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        self._ok = [0.0] * (max_concurrency + 1)  # successes per level, fading
        self._refused = [0.0] * (max_concurrency + 1)
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT)
        self._hold_until = 0.0
        self._plateau = MIN_PLATEAU  # seconds the window holds after a cap is found
        self._cap = 0  # the cap last found (0: none)
        self.confirmed = False  # the last cap found was where it had been found before

    @property
    def capped(self) -> bool:
        return self.size < self._max

    @property
    def capacity(self) -> float | None:
        """Requests per second the window lets through at the current latency (None: open)."""
        if not self.capped or not self.latency:
            return None
        return self.limit / self.latency

    def sent(self, sent_at: float, level: int) -> None:
        levels = self._levels
        same_time = levels.get(sent_at)
        if same_time is None:  # the common case: one send at a time
            if len(levels) >= MAX_LEVELS:
                levels.clear()
            levels[sent_at] = level
        elif isinstance(same_time, int):
            levels[sent_at] = [same_time, level]
        else:
            same_time.append(level)

    def succeeded(self, sent_at: float, now: float, sending: int) -> bool:
        """A success; True when the window has grown by a slot."""
        latency = now - sent_at
        average = self.latency
        self.latency = latency if average is None else average + SMOOTHING * (latency - average)
        level = self._level(sent_at)
        self._ok[level] += 1.0
        self._recent.append(level)
        size = self.size
        if size < self._max and now >= self._hold_until and sending + 1 >= self.limit:
            self.size = size = min(float(self._max), size + 1.0 / size)  # probing for room
            if int(size) > self.limit:
                self.limit = int(size)
                return True
        return False

    def refused(self, sent_at: float, now: float, pause: float, *, counted: bool) -> bool:
        """A 429 to the request sent at ``sent_at``: True when the answers say concurrency cap
        (the window has closed on it), False when they say rate or the 429 is not ``counted``
        (sent before the last reaction: the same overload seen late)."""
        level = self._level(sent_at)
        self._refusals.append((now, sent_at))
        self._refused[level] += 1.0
        self._recent.append(level)
        if not counted:
            return False
        cap = self._find_cap()
        known = self._cap
        if not cap and known and level > known and self._clean_under(known):
            cap = known  # a probe beyond the known cap found it where it was
            while cap + 1 < level and self._ok[cap + 1] and self._clean_at(cap + 1):
                cap += 1  # or a little higher: the levels on the way were accepted
        if level < cap:
            # Refused under the cap: no cap explains it (old evidence lingers: a first rush
            # accepted up to a bucket's burst and refused above it). The client counts at least
            # as many at the server as the server does; one refused at the cap's own level may
            # be the server's lag in counting a finished request out.
            cap = 0
        if not cap:
            cap = self._rare_cap(level)
        self._fade()
        if not cap:
            if self.capped:
                self._hold_until = now  # no cap (any more): let the window open again
            return False
        same = self.confirmed = cap == self._cap
        self._plateau = hold = next_plateau(self._plateau, same=same, pause=pause)
        if not same:  # perhaps a level low (a burst arrives in another order than it left)
            hold = max(FIRST_HOLD, min(MAX_PLATEAU, PROBE_COST * pause))
        self._cap = cap
        self.size = float(cap)
        self.limit = cap
        self._hold_until = now + pause + hold
        return True

    def _find_cap(self) -> int:
        """The level L the answers split at best (at most ``LOW`` refused at L, and at L or
        under, at least ``HIGH`` above; of those, the widest gap between the two shares), or
        0."""
        ok, refused = self._ok, self._refused
        ok_above, refused_above = sum(ok), sum(refused)
        ok_under = refused_under = 0.0
        found, best = 0, 0.0
        for level in range(1, self._max):
            ok_under += ok[level]
            refused_under += refused[level]
            ok_above -= ok[level]
            refused_above -= refused[level]
            if not ok_under or refused_above < MIN_EVIDENCE:
                continue
            share_under = refused_under / (ok_under + refused_under)
            share_above = refused_above / (ok_above + refused_above)
            if (
                self._clean_at(level)  # the window's top
                and share_under <= LOW
                and share_above >= HIGH
                and share_above - share_under > best
            ):
                found, best = level, share_above - share_under
        return found

    def _rare_cap(self, level: int) -> int:
        """``level - 1`` when this refusal, and one before it, came at a level few of the recent
        answers reached, with the levels under it clean; else 0. Under a rate limit a refusal
        falls on any send, at each level about as often as sends go there; under a cap, only
        above it. The split ``_find_cap`` looks for needs most sends above the cap refused,
        which jitter denies: a level the client counts 5 is often 4 at the server, so most of
        its sends are accepted. Recent answers, not all of them: a rate probe lifts the levels
        to ones rarely seen before, and its refusals land there.
        """
        recent = self._recent
        if level < 2 or len(recent) < RECENT or sum(self._refused[level:]) < RARE_EVIDENCE:
            return 0
        if sum(1 for seen in recent if seen >= level) > RARE * RECENT:
            return 0
        return level - 1 if self._clean_under(level - 1) else 0

    def _clean_at(self, level: int) -> bool:
        """At most ``LOW`` of the requests sent at ``level`` were refused (none sent: clean)."""
        refused = self._refused[level]
        return refused <= LOW * (self._ok[level] + refused)

    def _clean_under(self, level: int) -> bool:
        """At most ``LOW`` of the requests sent at ``level`` or under were refused."""
        ok = sum(self._ok[: level + 1])
        refused = sum(self._refused[: level + 1])
        return ok > 0 and refused <= LOW * (ok + refused)

    def _fade(self) -> None:
        self._ok = [count / 2.0 for count in self._ok]
        self._refused = [count / 2.0 for count in self._refused]

    def _level(self, sent_at: float) -> int:
        """The level of the request sent at ``sent_at``, forgotten now it is answered."""
        levels = self._levels
        same_time = levels.pop(sent_at, 0)
        if isinstance(same_time, list):
            level = same_time.pop()
            if same_time:
                levels[sent_at] = same_time
        else:
            level = same_time
            if not level:
                return 0  # not recorded: counted nowhere (level 0)
        refusals = self._refusals
        if refusals and refusals[-1][0] > sent_at:
            # Requests in flight when this one was sent but refused since did not hold a
            # place at the server: they do not count in its level.
            for answered_at, refused_sent_at in reversed(refusals):
                if answered_at <= sent_at:
                    break
                if refused_sent_at < sent_at:
                    level -= 1
        return max(1, min(level, self._max))
