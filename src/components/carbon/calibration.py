"""A running fit of platform power against RAPL power (docs/platform-power.md#calibration).

Where a platform meter and RAPL both measure, each interval gives one point: x = the RAPL
watts (cpu + ram when both are RAPL, else the RAPL part alone), y = the platform watts. The
ordinary least-squares line ``y = offset + slope x`` over the daemon's run so far says how
the rest of the machine behaves: ``offset`` is what the machine draws beyond RAPL at zero
RAPL power (fans, disks, PSU at idle), ``slope`` how platform power grows per RAPL watt
(PSU efficiency, VRMs, fans spinning up), ``residual`` (the RMS of the misfit) how far a
RAPL-only estimate of the platform would be off. Pure arithmetic: no I/O, no clock.

The sums are kept shifted by the first point (Welford-style) so that a month of 15 s
intervals at a few hundred watts loses no precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fit:
    points: int
    slope: float
    offset_w: float
    residual_w: float


class PlatformFit:
    def __init__(self) -> None:
        self._n = 0
        self._mean_x = self._mean_y = 0.0
        self._sxx = self._sxy = self._syy = 0.0  # co-moments about the running means

    def add(self, rapl_w: float, platform_w: float) -> None:
        if not (math.isfinite(rapl_w) and math.isfinite(platform_w)):
            return
        self._n += 1
        dx = rapl_w - self._mean_x
        dy = platform_w - self._mean_y
        self._mean_x += dx / self._n
        self._mean_y += dy / self._n
        self._sxx += dx * (rapl_w - self._mean_x)
        self._sxy += dx * (platform_w - self._mean_y)
        self._syy += dy * (platform_w - self._mean_y)

    def fit(self) -> Fit | None:
        """None until two points with different RAPL power exist."""
        if self._n < 2 or self._sxx <= 0.0:
            return None
        slope = self._sxy / self._sxx
        offset = self._mean_y - slope * self._mean_x
        sse = max(0.0, self._syy - slope * self._sxy)
        return Fit(self._n, slope, offset, math.sqrt(sse / self._n))
