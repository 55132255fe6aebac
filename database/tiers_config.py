"""Load the tier thresholds from tiers.yaml; any problem is one line naming the file and key."""

from __future__ import annotations

import math
from pathlib import Path

from database.config_files import did_you_mean, read_yaml
from database.errors import ConfigError, brief
from database.rules import TierThresholds

# YAML key path -> (TierThresholds field, whole numbers only)
KEYS: dict[str, tuple[str, bool]] = {
    "premium.min_revenue_usd": ("premium_min_revenue_usd", False),
    "premium.min_revenue_usd_with_products": ("premium_min_revenue_usd_with_products", False),
    "premium.min_valid_products": ("premium_min_valid_products", True),
    "standard.min_revenue_usd": ("standard_min_revenue_usd", False),
    "standard.min_active_days_with_revenue": ("standard_min_active_days_with_revenue", True),
    "basic.min_active_days": ("basic_min_active_days", True),
}
SECTIONS = ("premium", "standard", "basic")


def load_tiers(path: Path) -> TierThresholds:
    """Read and validate a tiers.yaml file."""
    path = Path(path)
    data = read_yaml(path, if_missing="restore it from git or set MIXPANEL_TIERS_PATH")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(SECTIONS)}")
    for section in data:
        if section not in SECTIONS:
            hint = did_you_mean(str(section), list(SECTIONS))
            raise ConfigError(f"{path}: unknown key '{section}'{hint}")
    values = {}
    for key, (field_name, whole) in KEYS.items():
        section, name = key.split(".")
        block = data.get(section)
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: key '{section}' must be a mapping holding '{name}'")
        known = [k.split(".")[1] for k in KEYS if k.startswith(section + ".")]
        for found in block:
            if found not in known:
                hint = did_you_mean(str(found), known)
                raise ConfigError(f"{path}: unknown key '{section}.{found}'{hint}")
        if name not in block:
            raise ConfigError(f"{path}: key '{key}' is missing")
        value = block[name]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and not math.isfinite(value):
            is_number = False  # .inf and .nan are YAML floats, but no threshold
        if not is_number or value < 0 or (whole and value != int(value)):
            kind = "a whole number >= 0" if whole else "a number >= 0"
            raise ConfigError(f"{path}: key '{key}' must be {kind}, got {brief(value)}")
        values[field_name] = int(value) if whole else float(value)
    return TierThresholds(**values)
