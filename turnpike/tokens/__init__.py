"""The Network Traversal token API (``Tokens.json``) and ICE servers check page."""
