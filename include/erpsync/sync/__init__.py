"""The sync engine: declarative entity specs and the one load path that runs them."""
