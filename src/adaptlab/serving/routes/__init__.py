"""The HTTP routes, one module per concern, each an ``APIRouter`` named ``router``.

Adding an endpoint family (say ``/v1/ner``) is one new module here plus one line in
:data:`adaptlab.serving.app.ROUTERS`; see the module docstring of :mod:`adaptlab.serving.app`.
"""
