"""Run folders: atomic files, the output lock, provenance and the SQLite run registry."""
