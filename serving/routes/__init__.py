"""The HTTP routes, one ``APIRouter`` per concern, included by :func:`serving.app.create_app`."""
