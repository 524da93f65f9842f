"""The browser explorer: a small FastAPI app over an `Index` (``tracinwe serve INDEX``)."""

from tracinwe.web.app import create_app

__all__ = ["create_app"]
