"""E-mail templates, registered in code: a subject, an HTML body and a text body with `$name` placeholders.

    from underlay.email.templates import define

    ORDER_SHIPPED = define(
        "order-shipped",
        subject="Your order $order is on its way",
        html="<p>Hi $name,</p><p>Order <b>$order</b> has shipped.</p>",
        text="Hi $name,\n\nOrder $order has shipped.\n",
    )

Placeholders are `string.Template`'s (`$name`, `${name}`, `$$` for a dollar sign). Every placeholder of the three
parts must have a variable; extra variables are ignored. In HTML every value is escaped (`html.escape`), so a
variable can never add markup; the subject loses line breaks. A template's module must be imported before a job
is enqueued or run: register it next to your job types (`underlay.job_types.register_modules`).
"""

from __future__ import annotations

import re
from html import escape
from string import Template
from typing import NamedTuple

# SES message tag values allow [A-Za-z0-9_-]: the template name is sent as one.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

Variables = dict[str, str | int | float]


class Rendered(NamedTuple):
    subject: str
    html: str
    text: str


class EmailTemplate(NamedTuple):
    name: str
    subject: Template
    html: Template
    text: Template

    @property
    def variables(self) -> frozenset[str]:
        """Every placeholder the three parts use."""
        return frozenset(
            name for part in (self.subject, self.html, self.text) for name in part.get_identifiers()
        )

    def missing(self, variables: Variables) -> list[str]:
        return sorted(self.variables - variables.keys())

    def render(self, variables: Variables) -> Rendered:
        """Fill the placeholders; KeyError naming the missing variables if any."""
        missing = self.missing(variables)
        if missing:
            raise KeyError(f"template {self.name!r} needs the variables: {', '.join(missing)}")
        plain = {k: str(v) for k, v in variables.items()}
        subject = " ".join(self.subject.substitute(plain).split())  # no line breaks in a header
        escaped = {k: escape(v, quote=True) for k, v in plain.items()}
        return Rendered(subject, self.html.substitute(escaped), self.text.substitute(plain))


_TEMPLATES: dict[str, EmailTemplate] = {}


def define(name: str, *, subject: str, html: str, text: str) -> EmailTemplate:
    """Register a template. Names are lowercase (`welcome`, `order-shipped`) and unique."""
    if not _NAME.match(name):
        raise ValueError(f"template name {name!r} must be lowercase letters, digits, '-' or '_'")
    template = EmailTemplate(name, Template(subject), Template(html), Template(text))
    for part, source in (("subject", template.subject), ("html", template.html), ("text", template.text)):
        if not source.is_valid():
            raise ValueError(f"template {name!r}: the {part} has a '$' that is not a placeholder (use '$$')")
    existing = _TEMPLATES.get(name)
    if existing is not None:
        if _sources(existing) != _sources(template):
            raise ValueError(f"template {name!r} is defined twice")
        return existing  # the same definition again (a module imported twice): one template
    _TEMPLATES[name] = template
    return template


def _sources(template: EmailTemplate) -> tuple[str, str, str]:
    return template.subject.template, template.html.template, template.text.template


def get(name: str) -> EmailTemplate:
    """The registered template; KeyError if unknown."""
    return _TEMPLATES[name]


def names() -> list[str]:
    return sorted(_TEMPLATES)


WELCOME = define(
    "welcome",
    subject="Welcome to $product, $name",
    html=(
        "<!doctype html><html><body>"
        "<p>Hi $name,</p>"
        "<p>Welcome to <strong>$product</strong>. Your account is ready.</p>"
        "<p>&mdash; The $product team</p>"
        "</body></html>"
    ),
    text="Hi $name,\n\nWelcome to $product. Your account is ready.\n\n-- The $product team\n",
)
