"""SIP user-agent server for the stream gateway: calls from carriers and PBXs (RFC 3261/3264)."""
