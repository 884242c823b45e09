"""E-mail through SES: templates registered in code, the `email.send` job, and a suppression list.

    from underlay import jobs
    jobs.enqueue("email.send", {"to": ["ada@example.com"], "template": "welcome",
                                "variables": {"name": "Ada", "product": "Underlay"}})

- `underlay.email.templates`: `define(name, subject=, html=, text=)` registers a template (`string.Template`
  placeholders, `$name` or `${name}`); HTML variables are escaped. Enqueueing checks that the template exists and
  that every placeholder has a variable (422 `payload.template` / `payload.variables` otherwise).
- `underlay.email.jobs`: the `email.send` job type (retries SES throttling and transient errors with backoff).
- `underlay.email.suppression`: addresses that bounced permanently or complained, fed by SES notifications
  through SNS (`functions/email_events`); sending skips them and says so in the job's result.
- `underlay.email.settings`: `EmailSettings` (the from-address, the SES configuration set).

This module imports nothing, so `underlay.settings` can import `EmailSettings` at no cost.
"""
