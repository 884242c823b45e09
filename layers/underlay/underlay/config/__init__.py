"""Runtime configuration (issue 5): layered sources, validation, hot reload, secrets, and the config API's logic.

- `underlay.config.keys`: the keys (every `Settings` field), which are secret and which may change at runtime.
- `underlay.config.runtime`: this process's effective configuration, its sources, and hot reload.
- `underlay.config.store`: runtime values, history and the version stamp in the config table.
- `underlay.config.secrets`: secret values from Secrets Manager or SSM SecureString (Powertools Parameters).
- `underlay.config.service`: what the config API does (read, write, validate, reload, history, rollback).

App code reads settings with `underlay.settings.get_settings()` and never needs this package directly.
"""
