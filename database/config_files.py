"""Reading the pipeline's YAML files (tiers.yaml, event_names.yaml): one-line errors only."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import yaml

from database.errors import ConfigError

# A tiers.yaml or event_names.yaml is a few hundred bytes; a big one is a mistake or hostile.
MAX_BYTES = 256 * 1024


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest option, or an empty string."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_yaml(path: Path, *, if_missing: str) -> object:
    """The file's YAML data; a missing, unreadable, malformed or absurdly big or deep file is
    a ConfigError naming it (`if_missing` says what to do about a missing one)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_BYTES // 1024} KB, which no configuration needs; "
                "check the file"
            )
        return yaml.safe_load(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; {if_missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); check the file") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to be a configuration; fix the file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
