"""The commdsl grammar, shipped as package data."""
