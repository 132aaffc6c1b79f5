"""Retriever families: each module is one :class:`~jaxir.training.family.Family` the loop trains.

Registered by name in :data:`jaxir.training.family.FAMILIES` (``"dense"``: :mod:`jaxir.families.dense`).
"""
