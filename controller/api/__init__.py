"""The HTTP API of a site (FastAPI): :func:`create_app` (routes in :mod:`controller.api.app`)."""

from controller.api.app import create_app

__all__ = ["create_app"]
