"""Expand a sweep: Hydra's own override parser and the BasicSweeper's cartesian product.

``a=1,2``, ``range(...)``, ``choice(...)`` and ``glob(...)`` over a config group (``method=glob(*)``) give the
points; interval sweeps cannot be enumerated and are refused.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

from launcher.errors import ConfigError


# ------------------------------------------------------------------------------------------- expansion


@dataclass
class Grid:
    """The expanded sweep: every point's overrides (in the user's order) and which keys vary."""

    points: list
    """One list of override strings per point, e.g. ["method=lora", "method.lr=0.001", "method.lora.r=4"]."""
    swept_keys: list
    """Keys with more than one value, in the order given."""

    def swept_values(self, point: Sequence[str]) -> dict:
        """{key: value-as-text} of the swept keys of one point."""
        values = dict(o.split("=", 1) for o in point if "=" in o)
        return {k: values[k] for k in self.swept_keys if k in values}


def _parse(overrides: Sequence[str], config_loader):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from launcher.config.compose import hydra_error_line

    parser = OverridesParser.create(config_loader=config_loader)
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as exc:
            raise ConfigError(f"sweep: cannot parse override '{text}': {hydra_error_line(exc)}") from None
    return parsed


def expand_grid(overrides: Sequence[str]) -> Grid:
    """The cartesian product of every sweep override, as Hydra's BasicSweeper builds it.

    A key given twice keeps its last value (as in Hydra). Interval sweeps (``interval(0,1)``) cannot be
    enumerated and are refused; a glob that matches no option of its group is refused.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from launcher.config.compose import hydra_error_line, conf_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            # The config loader lists a group's options, which glob(...) filters.
            parsed = _parse(overrides, GlobalHydra.instance().config_loader())
            per_key: dict = {}
            for override in parsed:
                key = override.get_key_element()
                if override.is_sweep_override():
                    if not override.is_discrete_sweep():
                        raise ConfigError(
                            f"sweep: '{override.input_line}' is an interval sweep, which a grid cannot enumerate;"
                            " list the values (a=1,2,3) or use range(start,stop,step)"
                        )
                    try:
                        values = list(override.sweep_string_iterator())
                    except HydraException as exc:
                        raise ConfigError(f"sweep: '{override.input_line}': {hydra_error_line(exc)}") from None
                    if not values:
                        raise ConfigError(
                            f"sweep: '{override.input_line}' gives no value"
                            + (" (the glob matches no option of that config group)"
                               if "glob" in (override.input_line or "") else "")
                        )
                    per_key[key] = [f"{key}={v}" for v in values]
                else:
                    per_key[key] = [override.input_line]
    finally:
        GlobalHydra.instance().clear()
    points = [list(p) for p in itertools.product(*per_key.values())]
    swept = [k for k, options in per_key.items() if len(options) > 1]
    return Grid(points=points, swept_keys=swept)


