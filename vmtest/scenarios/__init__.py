"""Scenarios: what runs in the guest while we measure. A catalog, as data."""

from __future__ import annotations

from typing import Any

from vmtest.errors import ConfigError
from vmtest.scenarios.base import Scenario
from vmtest.scenarios.cma_stress import CmaStress
from vmtest.scenarios.hotplug_offline import HotplugOffline
from vmtest.scenarios.kselftest import Kselftest

SCENARIOS: dict[str, type[Scenario]] = {
    CmaStress.name: CmaStress,
    HotplugOffline.name: HotplugOffline,
    Kselftest.name: Kselftest,
}


def get(name: str) -> type[Scenario]:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(f"unknown scenario {name!r}",
                          hint=f"available: {', '.join(sorted(SCENARIOS))}") from None


def make(name: str, profile: str, overrides: dict[str, Any] | None = None) -> Scenario:
    """A scenario with its profile's parameters and the overrides, type-checked."""
    cls = get(name)
    return cls(cls.params_for(profile, overrides or {}), profile)
