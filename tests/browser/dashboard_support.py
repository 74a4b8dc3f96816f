"""What the dashboard tests share besides fixtures: viewports, navigation, and numbers formatted the
way the page's JavaScript formats them."""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal

from e2e_support import Stack

LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def watch(page) -> None:
    """Collect what the page threw, and what its Content-Security-Policy blocked (Chromium logs that as
    a console error): a page that needs an inline script, a foreign script or a frame fails its test."""
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: refused_by_policy(page, message))


def refused_by_policy(page, message) -> None:
    if message.type == "error" and "Content Security Policy" in message.text:
        page.errors.append(message.text)


def goto(page, stack: Stack, route: str) -> None:
    page.goto(f"{stack.url}/#{route}")


def field(page, path: str):
    return page.locator(f'[data-field="{path}"]')


def job_id_of(page) -> str:
    page.wait_for_url(re.compile(r"#/jobs/\w+$"))
    return page.url.rsplit("/", 1)[1]


def js_round(value: float) -> int:
    """JavaScript's Math.round: halves go up (Python's round takes them to the even neighbour)."""
    return math.floor(value + 0.5)


def js_fixed(value: float, digits: int) -> str:
    """JavaScript's Number.prototype.toFixed: the float's exact value, halves rounded up in magnitude."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
