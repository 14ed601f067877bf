"""The Media Streams gateway: RTP calls in, ``<Stream>`` WebSockets out: ``turnpike streamgw``."""
