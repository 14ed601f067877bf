"""The STUN/TURN relay (RFC 8489/8656) with TURN REST credentials: ``turnpike relay``."""
