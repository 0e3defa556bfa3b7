"""When things happen: daily and weekly rhythms in an account's local time.

A profile is a weight per (local weekday, local hour). `sample_times` draws timestamps in given
spans with a density proportional to the profile of each row, by vectorised rejection sampling.
"""

from __future__ import annotations

import numpy as np

from training.simulator.config import DAY_MS, HOUR_MS

_H = np.arange(24)


def _week(hours: np.ndarray, weekend: float) -> np.ndarray:
    week = np.tile(hours, (7, 1)).astype(float)
    week[5:] *= weekend
    return week


_OFFICE_DAY = np.where((_H >= 9) & (_H < 18), 1.0, np.where((_H >= 7) & (_H < 21), 0.35, 0.04))
_CONSUMER_DAY = np.select([_H < 7, _H < 10, _H < 18], [0.06, 0.5, 0.7], 1.0)
_NIGHT_DAY = np.select([_H < 6, _H < 9, _H < 18], [1.0, 0.3, 0.12], 0.45)

PROFILES: dict[str, np.ndarray] = {
    "office": _week(_OFFICE_DAY, 0.15),  # business customers' staff and batch jobs
    "consumer": _week(_CONSUMER_DAY, 1.1),  # apps whose end users are people at home
    "machine": _week(0.45 + 0.55 * _OFFICE_DAY, 0.75),  # round-the-clock services
    "night": _week(_NIGHT_DAY, 1.3),  # fraud that wants nobody awake to notice
}
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)
OFFICE, CONSUMER, MACHINE, NIGHT = range(len(PROFILE_NAMES))
# Acceptance probability per (profile, weekday, hour), each profile scaled to a maximum of 1.
_ACCEPT = np.stack([w / w.max() for w in PROFILES.values()])
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def local_hour(ts: np.ndarray, utc_offset_ms: np.ndarray) -> np.ndarray:
    return np.asarray(((ts + utc_offset_ms) // HOUR_MS) % 24)


def sample_times(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    utc_offset_ms: np.ndarray,
    profile: np.ndarray | int,
) -> np.ndarray:
    """One epoch-ms timestamp per row in [lo, hi), following the row's profile in local time."""
    lo = np.asarray(lo, dtype=np.int64)
    span = np.maximum(np.asarray(hi, dtype=np.int64) - lo, 1)
    offset = np.broadcast_to(np.asarray(utc_offset_ms, dtype=np.int64), lo.shape)
    prof = np.broadcast_to(np.asarray(profile, dtype=np.int64), lo.shape)
    out = np.empty(len(lo), dtype=np.int64)
    todo = np.arange(len(lo))
    for _ in range(40):
        if not len(todo):
            break
        ts = lo[todo] + (rng.random(len(todo)) * span[todo]).astype(np.int64)
        local = ts + offset[todo]
        weekday = (local // DAY_MS + _EPOCH_WEEKDAY) % 7
        hour = (local // HOUR_MS) % 24
        accept = rng.random(len(todo)) < _ACCEPT[prof[todo], weekday, hour]
        out[todo[accept]] = ts[accept]
        todo = todo[~accept]
    # Vanishingly rare: a short span lying entirely in quiet hours.
    out[todo] = lo[todo] + span[todo] // 2
    return out


def next_local_hour(ts: np.ndarray, utc_offset_ms: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """The first time at or after `ts` when the local clock shows `hour`:00."""
    local = ts + utc_offset_ms
    midnight = local - local % DAY_MS
    target = midnight + hour * HOUR_MS
    target = np.where(target < local, target + DAY_MS, target)
    return np.asarray(target - utc_offset_ms, dtype=np.int64)
