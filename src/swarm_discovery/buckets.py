"""A token bucket: `rate` tokens a second, at most `burst` saved up.

Shared by the probe limits (probes a second per registrant) and the HTTP front's write limits
(writes a second per caller). A bucket untouched for `burst / rate` seconds is full again, no
different from a new one, which is what lets its owners forget idle buckets freely.
"""

from __future__ import annotations


class Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at  # when `tokens` was last brought up to date

    def take(self, now: float, rate: float, burst: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be (none taken)."""
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate
