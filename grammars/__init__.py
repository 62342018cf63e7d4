"""Grammar package (mapped from the top-level grammars/ folder)."""
