"""E-mail settings (`UNDERLAY_EMAIL__...`), a section of `underlay.settings.Settings`."""

from __future__ import annotations

from pydantic import BaseModel, Field
from underlay.email.addresses import EmailAddress


class EmailSettings(BaseModel):
    """E-mail through SES (issue 7)."""

    from_address: EmailAddress | None = None  # a verified SES identity (address or domain); required to send
    from_name: str | None = Field(default=None, max_length=128)  # display name: `"Underlay" <no-reply@...>`
    # The SES configuration set whose event destination publishes bounces and complaints to SNS (set by CDK).
    configuration_set: str | None = None
    # Suppressed addresses expire (DynamoDB TTL) after this many days; None keeps them until removed.
    suppression_days: int | None = Field(default=None, ge=1, le=3650)


def email_settings() -> EmailSettings:
    """The `email` section of the settings. Until `Settings` declares it, read from the same env variables."""
    from underlay.settings import env_source, get_settings

    found = getattr(get_settings(), "email", None)
    if isinstance(found, EmailSettings):
        return found
    return EmailSettings.model_validate(env_source().get("email") or {})
