"""One router per resource; each route is a few lines that call the engine."""
