"""E-mail addresses as pydantic validates them: a pragmatic check, no `email-validator` dependency.

The local part may hold RFC 5322 atom characters and dots (not leading, trailing or doubled); the domain is
dot-separated LDH labels with an alphabetic TLD (SES wants internationalised domains in punycode anyway).
Nothing with whitespace, angle brackets or line breaks gets through, so an address can never add a header.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def check_address(value: str) -> str:
    """The address, stripped; ValueError if it is not a plain `local@domain` address."""
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or len(address) > 254
        or len(local) > 64
        or not _LOCAL.match(local)
        or not _DOMAIN.match(domain)
    ):
        raise ValueError("not a valid e-mail address (local@domain.tld)")
    return address


EmailAddress = Annotated[str, AfterValidator(check_address)]


def unique(addresses: list[str]) -> list[str]:
    """The addresses without case-insensitive repeats, first spelling and order kept."""
    seen: set[str] = set()
    out = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out
