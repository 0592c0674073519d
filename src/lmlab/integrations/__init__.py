"""Adapters that plug lmlab models into other libraries (``lmlab.integrations.pyctcdecode``)."""
