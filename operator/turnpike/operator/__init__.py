"""The kopf operator: RelayEdge and StreamGateway reconciliation and keyring rotation."""
