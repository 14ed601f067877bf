from tokens.helpers import make_api

__all__ = ["make_api"]
