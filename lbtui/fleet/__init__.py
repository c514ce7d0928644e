"""Demo backends as real OS processes, each with its own fault knobs."""
