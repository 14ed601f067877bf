"""The kopf operator for RelayEdge and StreamGateway resources: ``turnpike operator``.

Imported as ``turnpike.operator`` only; never put this folder itself on ``sys.path``.
"""
