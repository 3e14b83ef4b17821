"""Latency lookup tables, in layers whose imports run one way (a test checks there is no cycle):

``key`` (a layer configuration) -> ``space`` (a model's channel groups and layer sites) -> ``table`` (the file)
-> ``predict`` (latency of a network from a table) -> ``fit`` (the whole-network calibration) -> ``networks``
(how whole networks are measured) -> ``micro``, ``build``, ``interpolate``, ``merge``, ``importers``,
``validate``, ``recalibrate``, ``show`` -> ``plots``.
"""
