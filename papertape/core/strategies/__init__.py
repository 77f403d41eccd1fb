"""The built-in strategies (see papertape.core.strategy for the interface)."""
