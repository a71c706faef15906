"""The dashboard: web pages for operators, prosumers and auditors, served by the API's app.

:func:`mount` adds them to :func:`controller.api.create_app`'s application:

* ``/static/...``: the stylesheet, PeerGrid's own scripts and the pinned third-party scripts
  (htmx, uPlot) shipped inside the package (``static/vendor/VENDOR.json`` names each file's
  npm package, version and SHA-256; ``scripts/vendor-js`` refreshes them). Nothing is fetched
  from another host: the pages work on a machine with no network.
* ``/ui/sites/{site}/...``: the pages (:mod:`controller.api.web.pages`), server-rendered from
  Jinja2 templates, and the HTML fragments htmx swaps into them.

Sign-in is the API's (EIP-4361 with the browser's wallet, ``window.ethereum``); the session
token lives in the tab's ``sessionStorage`` and goes out as ``Authorization: Bearer``, never
as a cookie, so the pages carry no CSRF risk; every page and fragment answers with a
Content-Security-Policy that allows scripts, styles and connections from this origin only.
"""

from controller.api.web.pages import mount

__all__ = ["mount"]
