"""The operator dashboard served under ``/ui`` by ``omsync serve``.

Include :data:`web_router` in the application before any catch-all route.
"""

from omsync.web.routes import router as web_router

__all__ = ["web_router"]
