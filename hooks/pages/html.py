"""HTML for the pages: Jinja2 templates with autoescaping, one stylesheet inline, and the CSP that allows it.

The service's default Content-Security-Policy is ``default-src 'none'``. A page adds exactly one permission:
its stylesheet, by SHA-256 hash (no ``unsafe-inline``, no script, no external origin); charts are inline SVG
with presentation attributes, which need nothing more. Every value a template prints is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any, Final

from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from hooks.pages.palette import PALETTE

__all__ = ["PAGE_CSP", "page_css", "page_response", "render_page"]


@lru_cache(maxsize=1)
def page_css() -> str:
    raw = resources.files("hooks.pages").joinpath("templates", "page.css").read_text(encoding="utf-8")
    return Template(raw).substitute({name.replace("-", "_"): colour for name, colour in PALETTE.items()})


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(page_css().encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; style-src 'sha256-{digest}'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")


PAGE_CSP: Final = _csp()


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("hooks.pages", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(template: str, **context: Any) -> str:
    # The stylesheet is ours and hashed in the CSP byte for byte: it is inserted as is, never escaped.
    css = Markup(page_css())  # noqa: S704 - a file of the package, not request data
    return _environment().get_template(template).render(css=css, **context)


def page_response(body: str, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": PAGE_CSP, "x-robots-tag": "noindex, nofollow"})
