"""HTTP: accept, queue, report. Never runs user code."""
