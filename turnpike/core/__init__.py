"""Code that several components share: each contract between components lives here once."""
