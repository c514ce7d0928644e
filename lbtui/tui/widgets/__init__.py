"""The console's widgets, one a module; each renders what it is given and never polls."""
