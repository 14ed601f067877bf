"""``turnpike dev``: the whole fleet on one machine."""
