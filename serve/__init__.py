"""The nrt HTTP service's entry points: ``serve.app:app`` and the load script ``serve/load.py``."""
