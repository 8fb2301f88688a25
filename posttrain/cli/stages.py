"""Training stages as subcommands: each takes --config FILE.yaml, KEY=VALUE overrides and --dry-run."""

from __future__ import annotations
