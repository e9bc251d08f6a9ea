"""Everything that reads a finished release folder."""
